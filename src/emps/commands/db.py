"""`emps db start|stop|status|url|migrate`."""

from __future__ import annotations

import typer
from rich.console import Console

from emps.db import Role, database_url, embedded_server, redact
from emps.settings import get_settings

app = typer.Typer(
    help="The platform database (embedded PostgreSQL unless EMPS_DATABASE_URL is set)."
)
console = Console()


def _require_embedded(action: str) -> None:
    if not get_settings().database.embedded:
        console.print(
            f"[yellow]EMPS_DATABASE_URL is set: the database is external, nothing to {action}.[/]"
        )
        raise typer.Exit(0)


@app.command()
def start() -> None:
    """Start the embedded PostgreSQL (harmless when it already runs)."""
    _require_embedded("start")
    server = embedded_server()
    before = server.status()
    status = server.start()
    word = "already running" if before.running else "started"
    console.print(f"PostgreSQL {word} on {server.host}:{status.port} (pid {status.pid})")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL."""
    _require_embedded("stop")
    stopped = embedded_server().stop()
    console.print("PostgreSQL stopped" if stopped else "PostgreSQL was not running")


@app.command()
def status() -> None:
    """Say whether the database runs and where."""
    settings = get_settings()
    if not settings.database.embedded:
        console.print(f"external database: {redact(database_url(Role.OWNER))}")
        return
    state = embedded_server().status()
    if state.running:
        console.print(f"running: pid {state.pid}, port {state.port}, {state.detail}")
    else:
        console.print(f"not running ({state.detail})")
        raise typer.Exit(1)


@app.command()
def url(role: Role = typer.Option(Role.OWNER, help="owner, writer or reader")) -> None:
    """Print the connection URL for a role (passwords redacted)."""
    typer.echo(redact(database_url(role)))


@app.command()
def migrate() -> None:
    """Apply pending migrations and the catalog: a column per channel, its types (re-runnable)."""
    from emps.migrate import migrate as run_migrate

    settings = get_settings()
    if settings.database.embedded:
        embedded_server(settings).start()
    report = run_migrate(settings)
    applied = ", ".join(report.applied) or "none pending"
    console.print(f"migrations applied: {applied}")
    if report.sensor_columns_added:
        console.print(f"channel columns added: {', '.join(report.sensor_columns_added)}")
    console.print(f"partitions created: {report.partitions_created}")
    from emps.transform import features_outdated

    stale = features_outdated(settings)
    if stale:
        console.print(
            f"[yellow]{stale}[/]: `emps dbt build --full-refresh` rebuilds them "
            "(`emps up` does it at its next start)",
            highlight=False,
        )
