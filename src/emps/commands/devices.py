"""`emps devices add|list|bind|rotate|revoke` and `emps api`: devices that push readings over the
HTTP API, their keys, and serving the API."""

from __future__ import annotations

import getpass

import typer
from rich.console import Console
from rich.table import Table

from emps.api.devices import (
    DeviceError,
    NewKey,
    add_device,
    bind_equipment,
    list_devices,
    revoke,
    rotate_key,
    shown,
    unregistered,
)
from emps.db import Role, connect

app = typer.Typer(help="Devices that send readings to the HTTP API, and their keys.")
console = Console()
err = Console(stderr=True)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


def _fail(exc: DeviceError) -> typer.Exit:
    err.print(str(exc), style="red", highlight=False, markup=False)
    return typer.Exit(1)


def _show_key(new: NewKey, what: str) -> None:
    """The key on stdout (alone on its line, for scripts); the explanation on stderr."""
    err.print(
        f"{what} for device {new.device_id} (prefix {new.prefix}). It is shown once and "
        "kept nowhere: store it in the device now. Send it as `Authorization: Bearer <key>`.",
        highlight=False,
    )
    typer.echo(new.key)


@app.command("add")
def add(
    device_id: str = typer.Argument(..., help="Device name: lower-case letters, digits, _.-"),
    equipment: list[str] = typer.Option(
        ..., "--equipment", "-e", help="An equipment id the device may report (repeat)"
    ),
    description: str = typer.Option("", "--description", help="Where or what the device is"),
) -> None:
    """Add a device bound to equipment ids, and print its first key (once)."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            new = add_device(conn, device_id, equipment, _actor(), description)
            unknown = unregistered(conn, sorted(set(equipment)))
    except DeviceError as exc:
        raise _fail(exc) from None
    if unknown:
        err.print(
            f"[yellow]note:[/] not registered yet: {', '.join(unknown)} (their readings are "
            "quarantined until `emps equipment import` registers them)",
            highlight=False,
        )
    _show_key(new, "Key")


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Include revoked devices"),
) -> None:
    """List devices, their equipment and live key prefixes (never the keys)."""
    with connect(Role.OWNER) as conn:
        devices = list_devices(conn, include_revoked=all_)
    table = Table("device", "equipment")
    # Prefixes are what `revoke --key` takes: one per line, never wrapped in a narrow terminal.
    table.add_column("live keys", no_wrap=True, min_width=12)
    for column in ("last used", "added", "revoked"):
        table.add_column(column)
    for d in devices:
        table.add_row(
            d["device_id"],
            ", ".join(d["equipment_ids"]),
            "\n".join(d["keys"]) or "-",
            shown(d["last_used_at"]),
            shown(d["created_at"]),
            shown(d["revoked_at"]),
        )
    console.print(table)


@app.command("bind")
def bind(
    device_id: str = typer.Argument(...),
    add_: list[str] = typer.Option([], "--add", help="An equipment id to allow (repeat)"),
    remove: list[str] = typer.Option([], "--remove", help="An equipment id to take away"),
) -> None:
    """Change the equipment a device may report."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            bound = bind_equipment(conn, device_id, add_, remove, _actor())
    except DeviceError as exc:
        raise _fail(exc) from None
    console.print(f"{device_id} may report: {', '.join(bound)}", highlight=False)


@app.command("rotate")
def rotate(
    device_id: str = typer.Argument(...),
    revoke_old: bool = typer.Option(
        False, "--revoke-old", help="Revoke the device's other keys at once (no overlap)"
    ),
) -> None:
    """Make a new key for a device; the old one keeps working until revoked."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            new = rotate_key(conn, device_id, _actor(), revoke_old=revoke_old)
    except DeviceError as exc:
        raise _fail(exc) from None
    _show_key(new, "New key")
    if not revoke_old:
        err.print(
            f"Once the device uses it, revoke the old key: `emps devices revoke {device_id} "
            "--key <old prefix>` (prefixes: `emps devices list`).",
            highlight=False,
        )


@app.command("revoke")
def revoke_(
    device_id: str = typer.Argument(...),
    key: str | None = typer.Option(None, "--key", help="Revoke only the key with this prefix"),
) -> None:
    """Revoke a device (all its keys), or one of its keys."""
    try:
        with connect(Role.OWNER, autocommit=True) as conn:
            revoked = revoke(conn, device_id, _actor(), prefix=key)
    except DeviceError as exc:
        raise _fail(exc) from None
    what = f"key {key}" if key else f"device {device_id} and its key(s) {', '.join(revoked)}"
    console.print(
        f"revoked {what}; the API refuses it within EMPS_API_KEY_CACHE_S", highlight=False
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="devices")

    @root.command("api")
    def api(
        port: int | None = typer.Option(None, "--port", help="Port (default EMPS_API_PORT)"),
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Address to listen on; 0.0.0.0 only in a container behind the TLS proxy",
        ),
    ) -> None:
        """Serve the HTTP API (device ingest; see docs/api.md). `emps up` runs it on 127.0.0.1."""
        from emps.api.app import run

        run(port=port, host=host)
