"""Devices that push readings over the HTTP API, and their keys.

A key is `emps_dev_<prefix>_<secret>`: a 12-hex-digit prefix the database finds it by, and 256
random bits. Only the key's SHA-256 is stored; the key itself is shown once, when it is made.
A device has at most two live keys, so a key can be rotated without a gap: `rotate` adds the
new key beside the old one, the device switches, the old key is revoked (`rotate --revoke-old`
does both at once for a device that cannot hold two).

These functions run as the database owner (the CLI on the server); every change is audited.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from emps.db import one

KEY_PREFIX = "emps_dev_"
KEY_PATTERN = re.compile(r"^emps_dev_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
DEVICE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
MAX_LIVE_KEYS = 2


class DeviceError(Exception):
    """A device or key change that cannot be made; the message says why and what to do."""


@dataclass(frozen=True)
class NewKey:
    """A key just made: `key` is shown to the user once and kept nowhere."""

    device_id: str
    key_id: int
    prefix: str
    key: str


def make_key() -> tuple[str, str, bytes]:
    """A new key: (key, prefix, sha256)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, key_hash(key)


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split_key(key: str) -> tuple[str, bytes] | None:
    """(prefix, sha256) of a well-formed key; None for anything else."""
    match = KEY_PATTERN.match(key.strip())
    if match is None:
        return None
    return match.group(1), key_hash(match.group(0))


def _device_id(device_id: str) -> str:
    device_id = device_id.strip()
    if not DEVICE_PATTERN.match(device_id):
        raise DeviceError(
            f"device name {device_id!r} must be 1-40 lower-case letters, digits and _.- "
            "(it names the device's folder in incoming/)"
        )
    return device_id


def _audit(conn: psycopg.Connection, actor: str, action: str, device_id: str, details: dict):
    conn.execute(
        "select ops.record_audit(%s, %s, 'device', %s, %s)",
        (actor, action, device_id, Jsonb(details)),
    )


def _insert_key(conn: psycopg.Connection, device_id: str, actor: str) -> NewKey:
    key, prefix, digest = make_key()
    (key_id,) = one(
        conn.execute(
            "insert into ops.device_keys (device_id, prefix, key_sha256, created_by) "
            "values (%s, %s, %s, %s) returning id",
            (device_id, prefix, digest, actor),
        )
    )
    return NewKey(device_id, key_id, prefix, key)


def unregistered(conn: psycopg.Connection, equipment_ids: list[str]) -> list[str]:
    """The ids among `equipment_ids` that raw.equipment does not know (yet)."""
    rows = conn.execute(
        "select e from unnest(%s::text[]) e "
        "where not exists (select 1 from raw.equipment r where r.equipment_id = e)",
        (equipment_ids,),
    ).fetchall()
    return [r[0] for r in rows]


def add_device(
    conn: psycopg.Connection,
    device_id: str,
    equipment_ids: list[str],
    actor: str,
    description: str = "",
) -> NewKey:
    """A new device bound to `equipment_ids`, with its first key."""
    device_id = _device_id(device_id)
    equipment_ids = sorted({e.strip() for e in equipment_ids if e.strip()})
    if not equipment_ids:
        raise DeviceError(
            "a device must be bound to at least one equipment id (--equipment ID, repeatable)"
        )
    with conn.transaction():
        found = conn.execute(
            "select revoked_at from ops.devices where device_id = %s for update", (device_id,)
        ).fetchone()
        if found is not None:
            raise DeviceError(
                f"device {device_id!r} already exists"
                + (" (revoked; choose another name)" if found[0] else ": use `emps devices rotate`")
            )
        conn.execute(
            "insert into ops.devices (device_id, equipment_ids, description, created_by) "
            "values (%s, %s, %s, %s)",
            (device_id, equipment_ids, description, actor),
        )
        new = _insert_key(conn, device_id, actor)
        _audit(
            conn,
            actor,
            "device.add",
            device_id,
            {"equipment_ids": equipment_ids, "key_prefix": new.prefix},
        )
    return new


def bind_equipment(
    conn: psycopg.Connection,
    device_id: str,
    add: list[str],
    remove: list[str],
    actor: str,
) -> list[str]:
    """Change the equipment a device may report; returns the ids it is bound to now."""
    device_id = _device_id(device_id)
    with conn.transaction():
        current = _live_device(conn, device_id)
        bound = sorted((set(current) | {e.strip() for e in add if e.strip()}) - set(remove))
        if not bound:
            raise DeviceError(
                f"device {device_id!r} would be bound to no equipment; revoke it instead"
            )
        conn.execute(
            "update ops.devices set equipment_ids = %s where device_id = %s", (bound, device_id)
        )
        _audit(conn, actor, "device.bind", device_id, {"before": current, "after": bound})
    return bound


def _live_device(conn: psycopg.Connection, device_id: str) -> list[str]:
    found = conn.execute(
        "select equipment_ids, revoked_at from ops.devices where device_id = %s for update",
        (device_id,),
    ).fetchone()
    if found is None:
        raise DeviceError(f"no device {device_id!r}: see `emps devices list`")
    if found[1] is not None:
        raise DeviceError(f"device {device_id!r} was revoked; add a new device instead")
    return list(found[0])


def rotate_key(
    conn: psycopg.Connection, device_id: str, actor: str, revoke_old: bool = False
) -> NewKey:
    """A new key for a device. Beside its live key (two during the switch), or replacing all of
    them with `revoke_old`. A device that already has two live keys must revoke one first."""
    device_id = _device_id(device_id)
    with conn.transaction():
        _live_device(conn, device_id)
        if revoke_old:
            revoked = _revoke_keys(conn, device_id, actor)
        else:
            revoked = []
            live = conn.execute(
                "select prefix from ops.device_keys where device_id = %s and revoked_at is null "
                "order by id",
                (device_id,),
            ).fetchall()
            if len(live) >= MAX_LIVE_KEYS:
                raise DeviceError(
                    f"device {device_id!r} already has {len(live)} live keys "
                    f"({', '.join(p for (p,) in live)}): revoke the one it no longer uses with "
                    f"`emps devices revoke {device_id} --key PREFIX`, or rotate with --revoke-old"
                )
        new = _insert_key(conn, device_id, actor)
        _audit(
            conn, actor, "device.rotate", device_id, {"key_prefix": new.prefix, "revoked": revoked}
        )
    return new


def _revoke_keys(
    conn: psycopg.Connection, device_id: str, actor: str, prefix: str | None = None
) -> list[str]:
    rows = conn.execute(
        "update ops.device_keys set revoked_at = now(), revoked_by = %s "
        "where device_id = %s and revoked_at is null and (%s::text is null or prefix = %s) "
        "returning prefix",
        (actor, device_id, prefix, prefix),
    ).fetchall()
    return sorted(p for (p,) in rows)


def revoke(
    conn: psycopg.Connection, device_id: str, actor: str, prefix: str | None = None
) -> list[str]:
    """Revoke one key of a device (by its prefix), or the device and all its keys; returns the
    prefixes revoked."""
    device_id = _device_id(device_id)
    with conn.transaction():
        _live_device(conn, device_id)
        revoked = _revoke_keys(conn, device_id, actor, prefix)
        if prefix is not None:
            if not revoked:
                raise DeviceError(f"device {device_id!r} has no live key with prefix {prefix!r}")
            _audit(conn, actor, "device.revoke_key", device_id, {"key_prefix": prefix})
        else:
            conn.execute(
                "update ops.devices set revoked_at = now() where device_id = %s", (device_id,)
            )
            _audit(conn, actor, "device.revoke", device_id, {"revoked_keys": revoked})
    return revoked


def list_devices(conn: psycopg.Connection, include_revoked: bool = False) -> list[dict[str, Any]]:
    """Every device with its equipment and its live keys (prefixes and last use only).

    Read from the tables, not a dbt mart: they hold the API's credentials and only the owner
    may read them; a mart would be readable by every dashboard user."""
    cur = conn.cursor(row_factory=dict_row).execute(
        "select d.device_id, d.equipment_ids, d.description, d.created_at, d.revoked_at, "
        "coalesce(array_agg(k.prefix order by k.id) filter (where k.id is not null), '{}') "
        "as keys, max(k.last_used_at) as last_used_at "
        "from ops.devices d left join ops.device_keys k "
        "on k.device_id = d.device_id and k.revoked_at is null "
        "where %s or d.revoked_at is null group by d.device_id order by d.device_id",
        (include_revoked,),
    )
    return cur.fetchall()


def shown(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M}"
