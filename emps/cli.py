"""`emps`: the command line of the platform. Each area keeps its commands in emps/commands/."""

from __future__ import annotations

import typer
from rich.console import Console

from emps.commands import alerts as alert_commands
from emps.commands import config as config_commands
from emps.commands import db as db_commands
from emps.commands import dbt as dbt_commands
from emps.commands import equipment as equipment_commands
from emps.commands import ingest as ingest_commands
from emps.commands import model as model_commands
from emps.commands import ops as ops_commands
from emps.commands import platform as platform_commands
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
    """Before any command: name the EMPS_* variables no setting reads (typos, removed settings)."""
    for warning in unknown_variables():
        Console(stderr=True).print(
            f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True
        )


app.add_typer(config_commands.app, name="config")
app.add_typer(db_commands.app, name="db")
app.add_typer(dbt_commands.app, name="dbt")
app.add_typer(equipment_commands.app, name="equipment")
app.add_typer(ops_commands.app, name="ops")
app.add_typer(simulate_commands.app, name="simulate")
app.add_typer(user_commands.app, name="user")
platform_commands.register(app)
ingest_commands.register(app)
model_commands.register(app)
alert_commands.register(app)


if __name__ == "__main__":
    app()
