"""`emps up` and `emps status`: run and inspect the whole platform."""

from __future__ import annotations

from pathlib import Path

import typer

FLEET_HELP = (
    "A fleet pack folder to run on instead of the simulated fleet (default: EMPS_FLEET_PACK): "
    "imported unless this install holds it unchanged; no simulator runs"
)


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        fleet: Path = typer.Option(None, "--fleet", file_okay=False, help=FLEET_HELP),
        simulator: bool = typer.Option(
            None,
            "--simulator/--no-simulator",
            help="Run the simulated fleet dropping live files (default: on, unless a fleet pack "
            "runs or was imported into this install)",
        ),
        history: bool = typer.Option(
            True, help="On an empty database without a fleet pack, backfill simulated history"
        ),
    ) -> None:
        """Start everything (PostgreSQL, orchestration, model registry, dashboard) until Ctrl-C.

        On a real fleet's history: `emps up --fleet PACK` (docs/fleet-packs.md).
        For real devices and no history: `emps up --no-simulator --no-history`.
        """
        from emps.supervisor import run_platform

        raise typer.Exit(run_platform(with_simulator=simulator, with_history=history, fleet=fleet))

    @app.command()
    def bootstrap(
        fleet: Path = typer.Option(None, "--fleet", file_okay=False, help=FLEET_HELP),
        history: bool = typer.Option(
            True, help="On an empty database without a fleet pack, backfill simulated history"
        ),
    ) -> None:
        """Make a new install score from its first minute: import the fleet pack (or, on an
        empty database, backfill simulated history), build the features, train and promote a
        first model, score the fleet. `emps up` runs it, in a process of its own, once its
        servers are up."""
        from rich.console import Console

        from emps.bootstrap import bootstrap as run_bootstrap
        from emps.fleet.importer import FleetConflict
        from emps.fleet.pack import PackError
        from emps.fleet.running import FleetRefused
        from emps.settings import get_settings

        try:
            run_bootstrap(with_history=history, fleet=fleet or get_settings().fleet_pack)
        except (PackError, FleetConflict, FleetRefused) as error:
            console = Console()
            console.print("[red]fleet pack refused:[/] ", end="")
            console.print(str(error), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    @app.command()
    def status() -> None:
        """Show which platform services run and where."""
        from emps.supervisor import print_status

        raise typer.Exit(print_status())

    metrics = typer.Typer(help="Prometheus metrics.")
    app.add_typer(metrics, name="metrics")

    @metrics.command("serve")
    def metrics_serve() -> None:
        """Serve Prometheus metrics on 127.0.0.1:EMPS_METRICS_PORT (/metrics)."""
        from emps.metrics import serve

        serve()
