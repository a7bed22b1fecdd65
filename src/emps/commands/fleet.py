"""`emps fleet import PACK`: bring a fleet's history (see emps/fleet/pack.py for the format)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from emps.settings import get_settings

app = typer.Typer(
    help="Fleet packs: a fleet's catalog, equipment, readings, failures and services.",
    no_args_is_help=True,
)
console = Console()


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
    from emps.fleet.console import import_progress, print_import_report
    from emps.fleet.importer import FleetConflict, import_pack
    from emps.fleet.pack import PackError

    settings = get_settings()
    if settings.database.embedded and not dry_run:
        embedded_server(settings).start()
    with import_progress(console) as on_progress:
        try:
            report = import_pack(pack, settings, dry_run=dry_run, on_progress=on_progress)
        except (PackError, FleetConflict) as error:
            console.print("[red]refused:[/] ", end="")
            console.print(str(error), highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(2) from None
    print_import_report(report, console)
    if not dry_run:
        console.print(
            "`emps up` runs on this fleet: at its start it builds the imported history's "
            "features and, when there is none yet, trains a first model (`emps dbt build` and "
            "`emps model train` do both now)",
            highlight=False,
        )
    raise typer.Exit(1 if report.problems else 0)
