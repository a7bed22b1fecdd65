"""`emps fleet import PACK`: bring a fleet's history (see emps/fleet/pack.py for the format)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emps.settings import get_settings

app = typer.Typer(
    help="Fleet packs: a fleet's catalog, equipment, readings, failures and services.",
    no_args_is_help=True,
)
console = Console()
PROBLEMS_SHOWN = 30


def print_import_report(report, out: Console = console) -> None:
    table = Table(
        title=f"fleet pack {report.pack}"
        + (" (dry run: nothing written)" if report.dry_run else "")
    )
    for column in (
        "part",
        "loaded" if not report.dry_run else "found",
        "already there",
        "refused",
        "s",
        "note",
    ):
        table.add_column(column)
    for step in report.steps:
        table.add_row(
            step.name,
            f"{step.loaded:,}",
            f"{step.known:,}" if step.known else "",
            f"{step.refused:,}" if step.refused else "",
            f"{step.seconds:.1f}" if step.seconds else "",
            step.note,
        )
    out.print(table)
    if report.readings:
        files = ", ".join(
            f"{v:,} {k.removeprefix('files_')}"
            for k, v in sorted(report.readings.items())
            if k.startswith("files_")
        )
        out.print(f"readings files: {files}", highlight=False)
    if report.problems:
        out.print(f"[yellow]{len(report.problems)} problem(s):[/]")
        for problem in report.problems[:PROBLEMS_SHOWN]:
            out.print(f"  {problem}", highlight=False, soft_wrap=True)
        if len(report.problems) > PROBLEMS_SHOWN:
            out.print(f"  ... and {len(report.problems) - PROBLEMS_SHOWN} more")


@app.command("import")
def import_(
    pack: Path = typer.Argument(..., exists=True, file_okay=False, help="The pack's folder"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Read and check the pack, write nothing"),
) -> None:
    """Import a fleet pack: its catalog becomes the platform's (migrated in place), then its
    equipment, readings (through the platform's validation), failures, services and held-out
    units. Importing the same pack again adds nothing. Every refusal names its file, row and
    field; the rest loads."""
    from emps.db import embedded_server
    from emps.fleet.importer import import_pack
    from emps.fleet.pack import PackError

    settings = get_settings()
    if settings.embedded and not dry_run:
        embedded_server(settings).start()
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, int] = {}

        def on_progress(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total)
            progress.update(tasks[step], completed=done, total=total)

        try:
            report = import_pack(pack, settings, dry_run=dry_run, on_progress=on_progress)
        except PackError as error:
            console.print(f"[red]refused:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    print_import_report(report)
    if not dry_run:
        console.print(
            "the imported history gets features with the next build (`emps dbt build`, or "
            "`emps up` at its start) and a model with `emps model train`",
            highlight=False,
        )
    raise typer.Exit(1 if report.problems else 0)
