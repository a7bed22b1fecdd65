"""`emps equipment import|list`: the equipment registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emps.settings import get_settings

app = typer.Typer(help="The equipment registry (raw.equipment).", no_args_is_help=True)
console = Console()


@app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, readable=True, help="CSV file to import"
    ),
) -> None:
    """Register or update equipment from a CSV file.

    Columns: equipment_id, equipment_type, site, commissioned_at (ISO-8601 date), optional unit.
    Every row is checked against the sensor catalog first; one bad row imports nothing and each
    problem is reported with its row and field. Known ids are updated (upsert).
    """
    from emps.catalog import load_catalog
    from emps.db import Role, connect
    from emps.equipment import EquipmentImportError, import_equipment_csv

    settings = get_settings()
    try:
        with connect(Role.INGEST, settings) as conn:
            inserted, updated = import_equipment_csv(
                conn, file, load_catalog(settings.catalog_path)
            )
    except EquipmentImportError as exc:
        console.print(str(exc), style="red", highlight=False, markup=False)
        raise typer.Exit(1) from exc
    console.print(f"{file.name}: {inserted} equipment added, {updated} updated")


@app.command("list")
def list_(site: str = typer.Option(None, help="Only this site")) -> None:
    """Show the registered equipment."""
    from emps.db import Role, connect

    with connect(Role.READER, get_settings()) as conn:
        rows = conn.execute(
            "select equipment_id, equipment_type, site, coalesce(unit, ''), "
            "commissioned_at::date::text, source from raw.equipment "
            "where %(site)s::text is null or site = %(site)s order by equipment_id",
            {"site": site},
        ).fetchall()
    table = Table("equipment", "type", "site", "unit", "commissioned", "source")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    console.print(f"{len(rows)} equipment")
