"""`emps user add|list|passwd`: dashboard accounts (roles Admin, Technician, Viewer)."""

from __future__ import annotations

import getpass

import typer
from rich.console import Console
from rich.table import Table

from emps.db import Role, connect
from emps.users import UserError, add_user, list_users, set_password

app = typer.Typer(help="Dashboard users: Admin, Technician (acts on alerts and tasks), Viewer.")
console = Console()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@app.command("add")
def add(
    username: str = typer.Argument(..., help="Sign-in name, lower case"),
    role: str = typer.Option("Viewer", "--role", "-r", help="Admin, Technician or Viewer"),
    name: str = typer.Option("", "--name", help="Display name"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="At least 10 characters"
    ),
) -> None:
    """Add a dashboard user."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            user = add_user(conn, username, role, password, name, actor=_actor())
    except UserError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"added {user.username} as {user.role.value}")


@app.command("passwd")
def passwd(
    username: str = typer.Argument(...),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="At least 10 characters"
    ),
) -> None:
    """Set a user's password."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            set_password(conn, username, password, actor=_actor())
    except UserError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"password of {username} changed")


@app.command("list")
def list_() -> None:
    """List dashboard users and their roles."""
    with connect(Role.OWNER) as conn:
        users = list_users(conn)
    table = Table("user", "role", "name", "active", "last sign-in")
    for user in users:
        table.add_row(
            user["username"],
            user["role"],
            user["display_name"],
            "yes" if user["active"] else "no",
            str(user["last_sign_in_at"] or "never"),
        )
    console.print(table)
