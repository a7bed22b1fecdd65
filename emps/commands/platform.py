"""`emps up` and `emps status`: run and inspect the whole platform."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        simulator: bool = typer.Option(True, help="Run the simulated fleet dropping live files"),
        history: bool = typer.Option(
            True, help="On an empty database, backfill simulated history and train on it"
        ),
    ) -> None:
        """Start everything (PostgreSQL, orchestration, model registry, dashboard) until Ctrl-C.

        For real devices: `emps up --no-simulator --no-history`.
        """
        from emps.supervisor import run_platform

        raise typer.Exit(run_platform(with_simulator=simulator, with_history=history))

    @app.command()
    def bootstrap(
        history: bool = typer.Option(
            True, help="On an empty database, backfill simulated history and train on it"
        ),
    ) -> None:
        """Make a new install score from its first minute: backfill simulated history (on an
        empty database), build the features, train and promote a first model, score the fleet.
        `emps up` runs it, in a process of its own, once its servers are up."""
        from emps.bootstrap import bootstrap as run_bootstrap

        run_bootstrap(with_history=history)

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
