"""Drop folders bound like device keys.

A file in `incoming/<device>/` (or deeper in it), where `<device>` is a device registered with
`emps devices add`, may only report the equipment that device is bound to, as the API refuses
a key's readings for other equipment. Rows for other equipment are quarantined with the device,
field and value named, and audited; the file's other rows load. Files at the top of `incoming/`,
or in a folder that names no registered device, are not bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from emps.ingest.parse import ROW
from emps.ingest.validate import FILE

AUDIT_ACTOR = "emps-ingest"
AUDIT_ACTION = "ingest.unbound_equipment"
AUDIT_MAX_ROWS = 50


@dataclass(frozen=True)
class Bindings:
    """Each registered device's bound equipment (revoked devices keep theirs)."""

    equipment: Mapping[str, frozenset[str]]

    @classmethod
    def load(cls, conn: psycopg.Connection) -> Bindings:
        rows = conn.execute("select device_id, equipment_ids from ops.device_bindings()")
        return cls({device: frozenset(ids or ()) for device, ids in rows.fetchall()})

    def device_of(self, file_name: str) -> str | None:
        """The device whose folder `file_name` (its path in incoming/) is in, if any."""
        folder, separator, _ = file_name.partition("/")
        return folder if separator and folder in self.equipment else None


@dataclass(frozen=True)
class Unbound:
    """A row of a device's folder for equipment that device is not bound to."""

    ledger_id: int
    row: int
    device: str
    equipment_id: str

    @property
    def reason(self) -> str:
        return (
            f"equipment_id {self.equipment_id!r} is not bound to device {self.device!r}, whose "
            f"folder incoming/{self.device}/ the file is in (bind it with `emps devices bind "
            f"{self.device} --add {self.equipment_id}`, or drop the file elsewhere)"
        )


def unbound_rows(
    frame: pd.DataFrame,
    sources: Mapping[int, str],
    bindings: Bindings,
    skip: set[int] | None = None,
) -> dict[int, Unbound]:
    """Frame index -> the row's binding problem, for rows of bound folders reporting other
    equipment. `sources` maps a ledger id to the file's path in incoming/; rows in `skip`
    (refused already) and rows without an equipment id (the suite refuses those) are left out."""
    devices = {
        ledger_id: device
        for ledger_id, name in sources.items()
        if (device := bindings.device_of(name)) is not None
    }
    if not devices:
        return {}
    in_folders = frame[FILE].isin(list(devices)) & frame["equipment_id"].notna()
    found: dict[int, Unbound] = {}
    columns = zip(
        frame.index[in_folders],
        frame.loc[in_folders, FILE],
        frame.loc[in_folders, ROW],
        frame.loc[in_folders, "equipment_id"],
        strict=True,
    )
    for index, ledger_id, row, equipment_id in columns:
        device = devices[int(ledger_id)]
        if equipment_id in bindings.equipment[device] or (skip and int(index) in skip):
            continue
        found[int(index)] = Unbound(int(ledger_id), int(row), device, str(equipment_id))
    return found


def audit(conn: psycopg.Connection, rows: list[Unbound], sources: Mapping[int, str]) -> None:
    """One audit row per file and device: which rows reported which equipment."""
    by_file: dict[int, list[Unbound]] = {}
    for item in rows:
        by_file.setdefault(item.ledger_id, []).append(item)
    for ledger_id, items in by_file.items():
        items.sort(key=lambda u: u.row)
        conn.execute(
            "select ops.record_audit(%s, %s, 'device', %s, %s)",
            (
                AUDIT_ACTOR,
                AUDIT_ACTION,
                items[0].device,
                Jsonb(
                    {
                        "reason": "drop file in a device's folder reports equipment not bound "
                        "to the device; rows quarantined",
                        "file": sources.get(ledger_id),
                        "ingest_file_id": ledger_id,
                        "rows_quarantined": len(items),
                        "rows": [u.row for u in items[:AUDIT_MAX_ROWS]],
                        "equipment_ids": sorted({u.equipment_id for u in items})[:AUDIT_MAX_ROWS],
                    }
                ),
            ),
        )
