"""`emps user add|list|passwd|token|tokens|revoke`: dashboard accounts (roles Admin, Technician,
Viewer) and the tokens scripts use."""

from __future__ import annotations

import getpass

import typer
from rich.console import Console
from rich.table import Table

from emps.db import Role, connect
from emps.users import (
    UserError,
    add_user,
    list_tokens,
    list_users,
    mint_token,
    revoke_tokens,
    set_password,
)

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
    temporary: bool = typer.Option(
        False, "--temporary", help="The user must choose their own password at first sign-in"
    ),
) -> None:
    """Add a dashboard user."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            user = add_user(
                conn, username, role, password, name, actor=_actor(), must_change_password=temporary
            )
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
    temporary: bool = typer.Option(
        False, "--temporary", help="The user must choose their own password at next sign-in"
    ),
) -> None:
    """Set a user's password (their dashboard sessions end)."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            set_password(conn, username, password, actor=_actor(), must_change_password=temporary)
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
            str(user["last_sign_in_at"] or "never")
            + (" (must choose a password)" if user["must_change_password"] else ""),
        )
    console.print(table)


@app.command("token")
def token(
    username: str = typer.Argument(..., help="Whose token: it acts with this user's role"),
    label: str = typer.Option("", "--label", help="What it is for (shown by `emps user tokens`)"),
    days: int = typer.Option(90, "--days", min=1, max=3650, help="Days until it stops working"),
    save: bool = typer.Option(
        False,
        "--save",
        help="Write it to the token file `emps predict` sends to the API (EMPS_API_TOKEN_FILE, "
        "mode 0600) instead of printing it",
    ),
) -> None:
    """Mint an API token for a script: it acts as the user, with their role read afresh at each
    use, until it expires or is revoked. It is printed once (or saved); only its hash is
    stored."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            secret, token_id, expires_at = mint_token(conn, username, label, days, _actor())
    except UserError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if save:
        from emps.commands.predict import save_token
        from emps.settings import get_settings

        path = save_token(secret, get_settings())
        console.print(
            f"token {token_id} for {username}, valid until {expires_at:%Y-%m-%d %H:%M %Z}, "
            f"saved to {path} (only you can read it); `emps predict` sends it to the API",
            highlight=False,
        )
        return
    console.print(
        f"token {token_id} for {username}, valid until {expires_at:%Y-%m-%d %H:%M %Z}; "
        "keep it secret, it is not shown again:",
        highlight=False,
    )
    typer.echo(secret)


@app.command("tokens")
def tokens(username: str = typer.Argument(None, help="Only this user's")) -> None:
    """Sessions and API tokens still valid (ids, labels, last use), never the tokens."""
    with connect(Role.OWNER) as conn:
        rows = list_tokens(conn, username)
    table = Table("id", "user", "kind", "label", "client", "last used", "expires")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["username"],
            row["kind"],
            row["label"],
            row["client"],
            f"{row['last_used_at']:%Y-%m-%d %H:%M}",
            f"{row['expires_at']:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@app.command("revoke")
def revoke(
    username: str = typer.Argument(...),
    token_id: int = typer.Option(None, "--token", help="Only this token (see `emps user tokens`)"),
) -> None:
    """End a user's dashboard sessions and API tokens (or one of them)."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            count = revoke_tokens(conn, username, token_id, actor=_actor())
    except UserError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"{count} session(s) or token(s) of {username} ended")
