"""`emps catalog check|migrate|regimes`: the fleet's catalog (channels, types, clocks, grids)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from emps.settings import get_settings

if TYPE_CHECKING:
    from emps.catalog import Catalog

app = typer.Typer(
    help="The catalog: channels, equipment types, clocks and feature grids.",
    no_args_is_help=True,
)
console = Console()


def _load(file: Path | None) -> Catalog:
    from emps.catalog import CatalogError, load_catalog

    path = file or get_settings().catalog_path
    try:
        return load_catalog(path)
    except CatalogError as error:
        console.print(f"[red]refused:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except OSError as error:
        console.print(f"[red]cannot read {path}:[/] {error}", highlight=False)
        raise typer.Exit(1) from None


def _database_columns() -> set[str] | None:
    """The reading columns the platform database has now, None when it cannot be reached."""
    from emps.db import Role, connect

    try:
        with connect(Role.OWNER, get_settings(), connect_timeout=3) as conn:
            rows = conn.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'raw' and table_name = 'sensor_readings'"
            ).fetchall()
    except Exception:
        return None
    return {row[0] for row in rows} or None


@app.command()
def check(
    file: Path | None = typer.Argument(
        None, help="Catalog file (default: the configured one, EMPS_CATALOG_PATH)"
    ),
) -> None:
    """Check a catalog and explain what it would create; a bad one is refused with the line
    and field of the problem."""
    catalog = _load(file)
    for note in catalog.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    channels = Table(title=f"channels ({len(catalog.channels)})")
    for column in ("channel", "role", "unit", "valid range", "required", "types"):
        channels.add_column(column)
    for channel in catalog.channels.values():
        having = [t.name for t in catalog.equipment_types.values() if channel.name in t.channels]
        channels.add_row(
            channel.name,
            channel.role,
            channel.unit,
            f"{channel.valid_range[0]:g} .. {channel.valid_range[1]:g}",
            "yes" if channel.required else "no",
            ", ".join(having) or "[yellow]none[/]",
        )
    console.print(channels)
    types = Table(title=f"equipment types ({len(catalog.equipment_types)})")
    for column in ("type", "clock", "slot", "windows", "baseline", "horizon", "sensors", "norms"):
        types.add_column(column)
    for etype in catalog.equipment_types.values():
        clock = etype.clock
        if clock.kind == "time":
            what = (
                f"time, a reading every {etype.span_label(clock.interval_s / etype.features.slot)}"
            )
        else:
            what = f"{clock.unit} counter (~{clock.interval_s:g} s each)"
        sensors = catalog.type_sensors(etype.name)
        settings = catalog.type_settings(etype.name)
        if settings:
            norms = f"learnt per regime of {', '.join(settings)}"
        elif all(etype.channels.get(s) for s in sensors):
            norms = "catalog bands"
        else:
            norms = "bands, else learnt"
        types.add_row(
            etype.name,
            what,
            etype.span_label(1),
            ", ".join(etype.window_label(k) for k in range(1, catalog.window_count + 1)),
            etype.baseline_label,
            etype.horizon_label,
            str(len(sensors)),
            norms,
        )
    console.print(types)
    features = catalog.feature_names()
    console.print(
        f"model features: {len(features)} ({len(catalog.sensor_names)} sensors x "
        f"{(len(features) - 2) // max(1, len(catalog.sensor_names))} + 2), e.g. "
        f"{', '.join(features[:3])}",
        highlight=False,
    )
    existing = _database_columns()
    if existing is not None:
        new = [c for c in catalog.channel_names if c not in existing]
        console.print(
            "`emps db migrate` would add columns: " + (", ".join(new) if new else "none"),
            highlight=False,
        )
    # A path is never broken across lines: users copy it.
    console.print(f"[green]ok:[/] {catalog.source}", highlight=False, soft_wrap=True)


@app.command()
def migrate(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A version 1 catalog"),
    write: bool = typer.Option(False, "--write", help="Rewrite the file (a .v1 copy is kept)"),
) -> None:
    """Rewrite a version 1 catalog (one sensor list for every type) as version 2."""
    from emps.catalog import catalog_yaml

    catalog = _load(file)
    text = catalog_yaml(catalog)
    if not write:
        typer.echo(text, nl=False)
        return
    backup = file.with_suffix(file.suffix + ".v1")
    backup.write_text(file.read_text(encoding="utf-8"), encoding="utf-8")
    file.write_text(text, encoding="utf-8")
    console.print(f"{file} rewritten as version 2 (the original is {backup})", highlight=False)


@app.command()
def regimes(
    refit: bool = typer.Option(
        False, "--refit", help="Fit again from the readings now stored (then rebuild features)"
    ),
) -> None:
    """Show the operating regimes found for types with setting channels (fitted on the first
    feature build with enough readings)."""
    from emps.db import Role, connect
    from emps.regimes import ensure_regimes

    settings = get_settings()
    catalog = _load(None)
    with connect(Role.WRITER, settings, autocommit=True) as conn:
        if refit:
            fits = ensure_regimes(conn, catalog, refit=True, seed=settings.ml.seed)
            for fit in fits:
                console.print(
                    f"{fit.equipment_type}: {fit.regimes} regime(s) from {fit.readings:,} readings",
                    highlight=False,
                )
            if fits:
                console.print(
                    "levels changed: run `emps dbt build --full-refresh` (or restart `emps up`)"
                )
        rows = conn.execute(
            "select equipment_type, regime, share, string_agg(setting || ' ' || "
            "round(centre::numeric, 3)::text, ', ' order by setting) from raw.operating_regimes "
            "group by equipment_type, regime, share order by equipment_type, regime"
        ).fetchall()
    if not rows:
        console.print("no operating regimes (no type with settings has enough readings yet)")
        return
    table = Table(title="operating regimes")
    for column in ("type", "regime", "share of readings", "centre"):
        table.add_column(column)
    for etype, regime, share, centre in rows:
        table.add_row(etype, str(regime), f"{share:.1%}" if share is not None else "", centre)
    console.print(table)
