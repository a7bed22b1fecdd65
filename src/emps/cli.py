"""`emps`: the command line of the platform. Each area keeps its commands in emps/commands/."""

from __future__ import annotations

import typer
from rich.console import Console

from emps.commands import alerts as alert_commands
from emps.commands import catalog as catalog_commands
from emps.commands import config as config_commands
from emps.commands import db as db_commands
from emps.commands import dbt as dbt_commands
from emps.commands import devices as device_commands
from emps.commands import equipment as equipment_commands
from emps.commands import failures as failure_commands
from emps.commands import fleet as fleet_commands
from emps.commands import ingest as ingest_commands
from emps.commands import model as model_commands
from emps.commands import ops as ops_commands
from emps.commands import platform as platform_commands
from emps.commands import secrets as secret_commands
from emps.commands import simulate as simulate_commands
from emps.commands import users as user_commands
from emps.settings import unknown_variables

app = typer.Typer(
    name="emps",
    help="Equipment Maintenance Prediction System: ingest, validate, predict, alert, report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _warn_unknown_variables() -> None:
    """Before any command: name the EMPS_* variables no setting reads (typos, removed settings),
    and give commands talking to this platform's Prefect server its credential."""
    for warning in unknown_variables():
        Console(stderr=True).print(
            f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True
        )
    _prefect_credential()


def _prefect_credential() -> None:
    """PREFECT_API_AUTH_STRING from the secrets file when PREFECT_API_URL names the local
    platform's Prefect server and no credential is set (`emps up` sets both for its children)."""
    import os

    url = (os.environ.get("PREFECT_API_URL") or "").rstrip("/")
    if not url or os.environ.get("PREFECT_API_AUTH_STRING"):
        return
    from emps.settings import get_settings

    port = get_settings().services.prefect_port
    if url in {f"http://{host}:{port}/api" for host in ("127.0.0.1", "localhost")}:
        from emps.credentials import load_secrets

        os.environ["PREFECT_API_AUTH_STRING"] = load_secrets().prefect_auth


app.add_typer(catalog_commands.app, name="catalog")
app.add_typer(config_commands.app, name="config")
app.add_typer(db_commands.app, name="db")
app.add_typer(dbt_commands.app, name="dbt")
app.add_typer(equipment_commands.app, name="equipment")
app.add_typer(failure_commands.app, name="failures")
app.add_typer(secret_commands.app, name="secrets")
app.add_typer(fleet_commands.app, name="fleet")
app.add_typer(ops_commands.app, name="ops")
app.add_typer(simulate_commands.app, name="simulate")
app.add_typer(user_commands.app, name="user")
platform_commands.register(app)
ingest_commands.register(app)
model_commands.register(app)
alert_commands.register(app)
device_commands.register(app)


if __name__ == "__main__":
    app()
