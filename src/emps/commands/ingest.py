"""`emps ingest PATH...` and `emps quality docs|suite`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
quality = typer.Typer(help="Data quality: the validation suite and its Data Docs.")
landing = typer.Typer(help="The landing zone devices drop files into.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.add_typer(quality, name="quality")
    app.add_typer(landing, name="landing")


@landing.command("watch")
def watch(
    seconds: float = typer.Option(None, min=0, help="Stop after this long (default: never)"),
) -> None:
    """Announce files arriving in landing/incoming as `emps.file.arrived` Prefect events.

    The ingest deployment's trigger starts a run on each event, so a dropped file is ingested
    within seconds. Bursts coalesce into a few events (EMPS_INGEST_WATCH_MIN_INTERVAL_S); files
    left waiting are announced again (EMPS_INGEST_WATCH_REARM_S). `emps up` runs this for you.
    """
    import os
    import signal

    from emps.ingest.watch import LandingWatcher

    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[red]PREFECT_API_URL is not set: the watcher's events must reach the platform's "
            "Prefect server (`emps up` sets it; e.g. http://127.0.0.1:4200/api)[/]"
        )
        raise typer.Exit(2)
    watcher = LandingWatcher()
    signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    console.print(f"watching {watcher.landing.incoming}; Ctrl-C stops")
    try:
        events = watcher.run(max_s=seconds)
    except KeyboardInterrupt:
        events = watcher.events
    console.print(f"stopped after {events} event(s)")


def ingest(
    paths: list[Path] = typer.Argument(
        None, help="Drop files or folders to ingest; none = whatever waits in landing/incoming"
    ),
    limit: int = typer.Option(None, help="At most this many files (default: the run limit)"),
) -> None:
    """Ingest drop files now (validate, load, archive), without waiting for the schedule."""
    from emps.ingest.pipeline import ingest_landing, stage_into_incoming

    names = None
    if paths:
        try:
            names = stage_into_incoming(paths)
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(2) from exc
        except OSError as exc:
            console.print(
                f"[red]could not copy the files into landing/incoming: {exc.strerror or exc}"
                f"{f' ({exc.filename})' if exc.filename else ''}; nothing was ingested[/]"
            )
            raise typer.Exit(1) from exc
        if not names:
            console.print("[yellow]no files found in the given folder(s)[/]")
            raise typer.Exit(0)
    total = len(names) if names is not None else None
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("files", total=total, last="loading validation suite")

        def on_file(outcome) -> None:
            progress.update(task, advance=1, last=f"{outcome.file}: {outcome.status}")

        report = ingest_landing(names=names, limit=limit, on_file=on_file)
    _print_report(report)
    if report.paused:
        console.print(
            f"[yellow]ingest paused: {report.paused}. The files wait (nothing is lost) and load "
            "once space is freed[/]"
        )
        raise typer.Exit(1)
    if any(o.status == "quarantined" for o in report.files):
        raise typer.Exit(1)


def _print_report(report) -> None:
    if not report.files:
        if not report.paused:
            console.print("nothing to ingest")
        return
    table = Table(
        "file", "status", "rows", "loaded", "duplicate", "quarantined", "conflict", "note"
    )
    for outcome in report.files[:50]:
        table.add_row(
            outcome.file,
            outcome.status,
            str(outcome.rows_total),
            str(outcome.rows_loaded),
            str(outcome.rows_duplicate),
            str(outcome.rows_quarantined),
            str(outcome.rows_conflict),
            "; ".join(filter(None, [outcome.error, *outcome.warnings])),
        )
    console.print(table)
    if len(report.files) > 50:
        console.print(f"... and {len(report.files) - 50} more files")
    summary = report.summary()
    console.print(
        f"{summary['files']} files: {summary['rows_loaded']} readings loaded, "
        f"{summary['rows_duplicate']} duplicates, {summary['rows_quarantined']} quarantined, "
        f"{summary['rows_conflict']} conflicting (see the Data quality page), "
        f"{summary['equipment']} equipment got data"
    )
    if summary["rows_loaded"]:
        console.print(
            "Features and predictions follow with the platform's next build: the next ingest run "
            "that loads readings (within a minute while `emps up` runs). `emps dbt build` builds "
            "the features now."
        )


@quality.command("docs")
def docs() -> None:
    """Build the Great Expectations Data Docs site from recent ingest validations."""
    from emps.ingest.docs import build_data_docs

    with console.status("building Data Docs (Great Expectations loads in ~10 s)"):
        index, count = build_data_docs()
    console.print(f"Data Docs with {count} validation result(s): {index}")


@quality.command("suite")
def suite(
    write: bool = typer.Option(False, "--write", help="Rewrite expectations/ from the catalog"),
) -> None:
    """Show (or with --write, regenerate) the validation suite derived from the sensor catalog."""
    from emps.catalog import load_catalog
    from emps.ingest.validate import SUITE_PATH, suite_json

    text = suite_json(load_catalog())
    if not write:
        console.print_json(text)
        current = SUITE_PATH.read_text(encoding="utf-8") if SUITE_PATH.exists() else ""
        if current != text:
            console.print(f"[yellow]{SUITE_PATH} is out of date: run with --write[/]")
            raise typer.Exit(1)
        return
    SUITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    SUITE_PATH.write_text(text, encoding="utf-8")
    console.print(f"wrote {SUITE_PATH}")
