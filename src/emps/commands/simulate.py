"""`emps simulate backfill|live`: a seeded, reproducible simulated fleet."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from emps.settings import get_settings

if TYPE_CHECKING:
    from emps.simulator.fleet import Fleet

app = typer.Typer(
    help="The simulated fleet: history straight into the database, live drop files.",
    no_args_is_help=True,
)
console = Console()


def _fleet(equipment: int | None, seed: int | None):
    from emps.catalog import load_catalog
    from emps.simulator.fleet import Fleet, Realism

    settings = get_settings()
    return Fleet(
        load_catalog(settings.catalog_path),
        equipment if equipment is not None else settings.simulator.equipment,
        seed if seed is not None else settings.simulator.seed,
        Realism.named(settings.simulator.realism),
    )


class _History(NamedTuple):
    fleet: Fleet
    days: int
    interval: int
    start: datetime
    stop: datetime

    @property
    def readings(self) -> int:
        return len(self.fleet) * self.days * 86_400 // self.interval


def _history(
    equipment: int | None, days: int | None, interval: int | None, seed: int | None, end=None
) -> _History:
    """The fleet and the window of history a command writes: the options given, else the
    settings; refuses an interval that is not a whole number of minutes."""
    from emps.simulator.backfill import history_window

    settings = get_settings()
    days = days or settings.simulator.history_days
    interval = interval or settings.simulator.history_interval_s
    if interval % 60:
        raise typer.BadParameter(
            f"{interval} s: use a whole number of minutes", param_hint="--interval"
        )
    start, stop = history_window(days, interval, end)
    return _History(_fleet(equipment, seed), days, interval, start, stop)


def _database_up() -> None:
    from emps.db import embedded_server

    settings = get_settings()
    if settings.database.embedded:
        embedded_server(settings).start()


@app.command()
def backfill(
    equipment: int = typer.Option(
        None, min=1, help="Fleet size (default: EMPS_SIM_EQUIPMENT, 200)"
    ),
    days: int = typer.Option(
        None, min=1, help="Days of history (default: EMPS_SIM_HISTORY_DAYS, 30)"
    ),
    interval: int = typer.Option(
        None,
        min=60,
        help="Seconds between readings, a whole number of minutes "
        "(default: EMPS_SIM_HISTORY_INTERVAL_S, 600)",
    ),
    seed: int = typer.Option(None, help="Random seed (default: EMPS_SIM_SEED, 42)"),
    end: datetime = typer.Option(
        None,
        formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
        help="End of the history (UTC, exclusive) (default: now)",
    ),
) -> None:
    """Write simulated history straight into the database.

    Registers the fleet in raw.equipment (source 'simulator'), COPYs readings into raw.sensor_readings one day at a time (memory stays bounded at any cadence: one reading a minute for 200 equipment over 180 days is 51.8M rows, and works, slowly), and records failure events (raw.failure_events, with repaired_at), completed repair and preventive maintenance (ops.maintenance_tasks) and the ground truth (sim.equipment_truth).

    History defaults to one reading every 10 minutes (EMPS_SIM_HISTORY_INTERVAL_S=600). Re-running over a window that already has data does not duplicate anything: overlapping days are merged (existing readings kept), events are upserts. A seed gives the same fleet and the same readings every time, and `emps simulate live` with the same seed continues the history.
    """
    from emps.simulator.backfill import backfill as run_backfill

    settings = get_settings()
    history = _history(equipment, days, interval, seed, end.replace(tzinfo=UTC) if end else None)
    fleet, days, interval, start, stop = history
    expected = history.readings
    _database_up()
    console.print(
        f"Backfilling {len(fleet)} equipment, {days} days from {start:%Y-%m-%d %H:%M} to "
        f"{stop:%Y-%m-%d %H:%M} UTC, one reading every {interval} s (seed {fleet.seed})"
    )
    with Progress(
        TextColumn("[bold]readings"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("readings", total=expected, rate="")
        began = datetime.now(UTC)

        def advance(rows: int) -> None:
            elapsed = (datetime.now(UTC) - began).total_seconds() or 1e-9
            done = progress.tasks[0].completed + rows
            progress.update(task, advance=rows, rate=f"{done / elapsed:,.0f} rows/s")

        report = run_backfill(fleet, start, stop, interval, settings, progress=advance)
        progress.update(task, completed=expected)
    if report.rows_existing:
        console.print(
            f"{report.rows_existing:,} readings were already there and were kept as they were"
        )
    events = report.events
    console.print(
        f"{report.rows:,} readings in {report.seconds:.1f} s ([bold]{report.rows_per_s:,.0f} "
        f"rows/s[/]); {events.failure_events} failure events, {events.repairs} repairs, "
        f"{events.preventive} preventive services ({events.prevented} found a developing fault)"
    )


@app.command()
def pack(
    out: Path = typer.Argument(..., file_okay=False, help="Folder to write the fleet pack into"),
    equipment: int = typer.Option(None, min=1, help="Fleet size (default: EMPS_SIM_EQUIPMENT)"),
    days: int = typer.Option(None, min=1, help="Days of history (default: EMPS_SIM_HISTORY_DAYS)"),
    interval: int = typer.Option(
        None, min=60, help="Seconds between readings (default: EMPS_SIM_HISTORY_INTERVAL_S)"
    ),
    seed: int = typer.Option(None, help="Random seed (default: EMPS_SIM_SEED)"),
) -> None:
    """Write the simulated fleet's history as a fleet pack (catalog, equipment, readings as
    drop files, failures, maintenance), for `emps fleet import` like any other fleet's."""
    from emps.simulator.pack import write_pack

    if out.exists() and any(out.iterdir()):
        raise typer.BadParameter(f"{out} is not empty", param_hint="OUT")
    settings = get_settings()
    history = _history(equipment, days, interval, seed)
    fleet, days, interval, start, stop = history
    expected = history.readings
    with Progress(
        TextColumn("[bold]readings"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("readings", total=expected)
        rows = write_pack(
            fleet,
            start,
            stop,
            interval,
            out,
            Path(settings.catalog_path).read_text(encoding="utf-8"),
            progress=lambda n: progress.advance(task, n),
        )
        progress.update(task, completed=expected)
    console.print(f"{rows:,} readings of {len(fleet)} equipment written to {out}")


@app.command()
def live(
    equipment: int = typer.Option(None, min=1, help="Fleet size (default: EMPS_SIM_EQUIPMENT)"),
    interval: int = typer.Option(
        None,
        min=60,
        help="Seconds between drops, whole minutes (default: EMPS_SIM_LIVE_INTERVAL_S)",
    ),
    seed: int = typer.Option(None, help="Random seed; use the backfill's to continue its history"),
    per_site: bool = typer.Option(
        False, "--per-site", help="One file per site gateway instead of one per device"
    ),
    bad_share: float = typer.Option(
        0.0, min=0.0, max=1.0, help="Share of files made malformed (bad numbers, truncation, ...)"
    ),
    once: bool = typer.Option(False, "--once", help="Write the current interval and exit"),
    database: bool = typer.Option(
        True, "--db/--no-db", help="Register the fleet and record failures in the database"
    ),
) -> None:
    """Drop one file per device (or per site gateway) into <EMPS_HOME>/landing/incoming/ every interval.

    Files mix CSV, JSON arrays and NDJSON, a quarter gzip'd, timestamps as ISO-8601 with an offset or epoch seconds; each appears atomically (written as .NAME.part, then renamed). Devices that are down (failed, awaiting repair) or out of contact send nothing.

    Failures, repairs and preventive services that happen while it runs are written straight to raw.failure_events and ops.maintenance_tasks (source/created_by 'simulator'), as the maintenance system would record them; the drop files carry only readings. With the same seed it continues a backfilled fleet (same ids, same degradations).
    """
    from emps.simulator.live import LiveSimulator, LiveTick, incoming_dir

    settings = get_settings()
    interval = interval or settings.simulator.live_interval_s
    fleet = _fleet(equipment, seed)
    try:
        simulator = LiveSimulator(
            fleet,
            incoming_dir(settings),
            interval,
            per_site=per_site,
            bad_share=bad_share,
            settings=settings,
            use_database=database,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if database:
        _database_up()
    console.print(
        f"Simulating {len(fleet)} equipment (seed {fleet.seed}) every {interval} s into "
        f"{simulator.directory}" + ("" if once else "; Ctrl-C stops")
    )

    def report(tick: LiveTick) -> None:
        bad = sum(1 for f in tick.files if f.defect)
        line = f"{tick.ts:%Y-%m-%d %H:%M} UTC: {len(tick.files)} files, {tick.rows} readings"
        if bad:
            line += f", {bad} malformed"
        if tick.events.failure_events:
            line += f", {tick.events.failure_events} failure events recorded"
        console.print(line)

    try:
        simulator.run(once=once, on_tick=report)
    except KeyboardInterrupt:
        console.print("stopped")
