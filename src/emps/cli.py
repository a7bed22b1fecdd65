"""`emps`: the command line of the platform. Each area keeps its commands in emps/commands/.

A command's module is imported when that command is looked up, not when `emps` starts: `emps
predict` through the HTTP API then starts without the database driver or the ML stack, and each
command pays only for its own imports. `emps --help` looks every command up, so it lists them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer
from typer._click import Command, Context  # the click typer carries (typer is pinned)
from typer.core import TyperGroup

# Every top-level command, in the order `emps --help` lists them, and where in emps.commands it
# is defined: `module:app`, the module's Typer app is the command group of that name;
# `module:register`, the module's function adding its commands to the root app.
COMMANDS: dict[str, str] = {
    "up": "platform:register",
    "bootstrap": "platform:register",
    "status": "platform:register",
    "ingest": "ingest:register",
    "predict": "predict:register",
    "api": "devices:register",
    "catalog": "catalog:app",
    "config": "config:app",
    "db": "db:app",
    "dbt": "dbt:app",
    "equipment": "equipment:app",
    "failures": "failures:app",
    "secrets": "secrets:app",
    "fleet": "fleet:app",
    "ops": "ops:app",
    "simulate": "simulate:app",
    "user": "users:app",
    "metrics": "platform:register",
    "quality": "ingest:register",
    "landing": "ingest:register",
    "model": "model:app",
    "alerts": "alerts:register",
    "tasks": "alerts:register",
    "notify": "alerts:register",
    "mail": "alerts:register",
    "devices": "devices:register",
}


class _CommandsOnDemand(MutableMapping[str, Command]):
    """The root's commands by name: every name is known from the start, a command is built
    (its module imported) the first time it is read."""

    def __init__(self, group: _LazyGroup) -> None:
        self.group = group
        self.built: dict[str, Command] = {}

    def __getitem__(self, name: str) -> Command:
        if name not in self.built and name in COMMANDS:
            self.built.update(self.group.build(COMMANDS[name], name))
        return self.built[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self.built

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*COMMANDS, *self.built]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*COMMANDS, *self.built]))

    def __setitem__(self, name: str, command: Command) -> None:
        self.built[name] = command

    def __delitem__(self, name: str) -> None:
        del self.built[name]


class _LazyGroup(TyperGroup):
    """The root group, whose commands are built on demand (click's documented LazyGroup, with
    the commands' own Typer apps turned into commands as `add_typer` would)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        commands = _CommandsOnDemand(self)
        commands.built.update(self.commands)
        self.commands = commands

    def list_commands(self, ctx: Context) -> list[str]:
        return list(self.commands)  # the names only: help then reads each one

    def build(self, where: str, name: str) -> dict[str, Command]:
        """The command `name` and the others defined with it (`where`, as in COMMANDS), built
        as the root app builds its own, with the root's options."""
        module_name, _, attribute = where.partition(":")
        found = getattr(importlib.import_module(f"emps.commands.{module_name}"), attribute)
        scratch = typer.Typer(
            rich_markup_mode=self.rich_markup_mode, suggest_commands=self.suggest_commands
        )
        if isinstance(found, typer.Typer):
            scratch.add_typer(found, name=name)
        else:
            found(scratch)
        commands = dict(typer.main.get_group(scratch).commands)
        if name not in commands:
            raise LookupError(f"emps.commands.{where} defines no command {name!r}")
        return commands


app = typer.Typer(
    name="emps",
    cls=_LazyGroup,
    help="Equipment Maintenance Prediction System: ingest, validate, predict, alert, report.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _warn_unknown_variables() -> None:
    """Before any command: name the EMPS_* variables no setting reads (typos, removed settings),
    and give commands talking to this platform's Prefect server its credential."""
    from emps.settings import unknown_variables

    warnings = unknown_variables()
    if warnings:
        from rich.console import Console

        for warning in warnings:
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


if __name__ == "__main__":
    app()
