"""How a fleet import shows itself: a progress bar per step while it runs, then a table of what
loaded and the refusals, each with its file, row and field (`emps fleet import`, `emps up`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from emps.fleet.importer import ImportReport, OnProgress

PROBLEMS_SHOWN = 30


@contextmanager
def import_progress(console: Console) -> Iterator[OnProgress]:
    """An `on_progress` for import_pack drawing one bar per step (gone once the import ends)."""
    with Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = progress.add_task(step, total=total)
            progress.update(tasks[step], completed=done, total=total)

        yield on_progress


def print_import_report(
    report: ImportReport, out: Console, problems_shown: int | None = PROBLEMS_SHOWN
) -> None:
    """The import's table and its problems (the first `problems_shown`; None: all)."""
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
        shown = report.problems if problems_shown is None else report.problems[:problems_shown]
        out.print(f"[yellow]{len(report.problems)} problem(s):[/]")
        for problem in shown:
            out.print(f"  {problem}", highlight=False, markup=False, soft_wrap=True)
        if len(report.problems) > len(shown):
            out.print(f"  ... and {len(report.problems) - len(shown)} more")
