"""`emps secrets show|rotate`: the generated passwords and credentials of the local platform."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from emps.settings import get_settings

app = typer.Typer(
    help="The platform's generated passwords and credentials (<home>/secrets.json, mode 0600)."
)
console = Console()
PARTS = ("database", "prefect", "mlflow")


@app.command()
def show(
    database: bool = typer.Option(False, "--database", help="Also the database roles' passwords"),
) -> None:
    """Where the secrets are, and the credentials the Prefect and MLflow UIs ask for."""
    from emps.credentials import load_secrets, secrets_path

    settings = get_settings()
    secrets = load_secrets(settings)
    console.print(f"secrets file: {secrets_path(settings)} (readable by you only)")
    table = Table("for", "where", "credential")
    table.add_row(
        "Prefect UI and API",
        f"http://127.0.0.1:{settings.services.prefect_port}",
        f"{secrets.prefect_auth} (the whole string; PREFECT_API_AUTH_STRING for clients)",
    )
    user, password = secrets.mlflow_auth.split(":", 1)
    table.add_row(
        "MLflow UI and API",
        f"http://127.0.0.1:{settings.services.mlflow_port}",
        f"user {user}, password {password}",
    )
    if database:
        for role, password in secrets.database.items():
            table.add_row(
                f"database role {role}",
                f"{settings.database.pg_host}:{settings.database.pg_port}",
                password,
            )
    console.print(table, soft_wrap=True)


@app.command()
def rotate(
    only: list[str] = typer.Option(
        None, "--only", help="database, prefect or mlflow (repeatable; default: all three)"
    ),
) -> None:
    """Replace the generated secrets: every database role's password (set on the embedded
    server at once), the Prefect API's auth string and the MLflow credential. Stop `emps up`
    first: running services hold the old ones."""
    from emps.credentials import forget_cached, load_secrets, rotated, secrets_path, write_secrets
    from emps.supervisor import _take_lock

    settings = get_settings()
    parts = set(only or PARTS)
    unknown = parts - set(PARTS)
    if unknown:
        raise typer.BadParameter(f"unknown {sorted(unknown)}; use {', '.join(PARTS)}")
    lock = _take_lock(settings)
    if lock is None:
        console.print("[red]EMPS is running: stop `emps up` (Ctrl-C), then rotate.[/]")
        raise typer.Exit(1)
    try:
        current = load_secrets(settings)
        new = rotated(current, parts)
        path = secrets_path(settings)
        if "database" in parts:
            if not settings.database.embedded:
                console.print(
                    "[yellow]EMPS_DATABASE_URL is set: the database's passwords are yours to "
                    "rotate (SECURITY.md); the file's database entries are left as they are.[/]"
                )
                new = rotated(current, parts - {"database"})
            else:
                _set_database_passwords(settings, current, new, path)
        else:
            write_secrets(new, path)
        forget_cached()
    finally:
        lock.close()
    console.print(f"rotated {', '.join(sorted(parts))}; {path} holds the new values")


def _set_database_passwords(settings, current, new, path) -> None:
    """Every role's new password on the running (or started) embedded server, then the file.
    The new file is written first beside the old one, so a failure in between loses nothing."""
    import psycopg

    from emps.credentials import SUPERUSER, write_secrets
    from emps.db import embedded_server, set_role_passwords

    server = embedded_server(settings)
    was_running = server.status().running
    server.start()
    pending = path.with_name(path.name + ".new")
    write_secrets(new, pending)
    try:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn, conn.transaction():
            set_role_passwords(conn, settings, new)
    except Exception:
        pending.unlink(missing_ok=True)
        raise
    pending.replace(path)
    if current.password(SUPERUSER) != new.password(SUPERUSER):
        server.superuser_password = new.password(SUPERUSER)
    if not was_running:
        server.stop()
