"""`emps up` and `emps status`: run and inspect the whole platform."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        simulator: bool = typer.Option(True, help="Run the simulated fleet dropping live files"),
    ) -> None:
        """Start everything (PostgreSQL, orchestration, model registry, dashboard) until Ctrl-C."""
        from emps.supervisor import run_platform

        raise typer.Exit(run_platform(with_simulator=simulator))

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
