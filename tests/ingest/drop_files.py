"""Drop files as devices write them, for the ingest tests: readings of the test fleet
(EQUIPMENT, registered by the `ingest_db` fixture), CSV/JSON/NDJSON/gzip bytes of them, and
`Drops`, which writes them into the landing zone's incoming/ folder. The values sit inside the
default catalog's bands, which is what the ingest tests validate against."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emps.ingest.landing import Landing

EQUIPMENT = [f"GEN-{i:04d}" for i in range(1, 6)] + [f"PMP-{i:04d}" for i in range(1, 6)]
BASE_TS = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)


def reading(equipment_id: str = "GEN-0001", minute: int = 0, **values: Any) -> dict[str, Any]:
    """One valid reading (override any field; pass field=None to leave it out of CSV/JSON)."""
    row: dict[str, Any] = {
        "equipment_id": equipment_id,
        "timestamp": (BASE_TS + timedelta(minutes=minute)).isoformat(),
        "temperature": 80.5,
        "vibration": 3.25,
        "pressure": 350.0,
        "humidity": 40.0,
        "voltage": 410.0,
    }
    row.update(values)
    return row


def csv_bytes(rows: list[dict[str, Any]], columns: list[str] | None = None, **kw) -> bytes:
    columns = columns or list(rows[0]) if rows else columns or ["equipment_id", "timestamp"]
    out = io.StringIO()
    writer = csv.writer(out, **kw)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return out.getvalue().encode()


def json_bytes(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps(rows).encode()


def ndjson_bytes(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


class Drops:
    """Writes drop files into the landing zone's incoming/ folder, like a device would."""

    def __init__(self, landing: Landing):
        self.landing = landing

    def put(self, name: str, data: bytes) -> Path:
        path = self.landing.incoming / name
        path.write_bytes(data)
        return path

    def csv(self, name: str, rows: list[dict[str, Any]], **kw) -> Path:
        return self.put(name, csv_bytes(rows, **kw))
