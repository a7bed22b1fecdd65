"""Ingest test fixtures: a clean landing zone, registered equipment, drop-file builders."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.settings import Settings

EQUIPMENT = [f"GEN-{i:04d}" for i in range(1, 6)] + [f"PMP-{i:04d}" for i in range(1, 6)]
SENSORS = ["temperature", "vibration", "pressure", "humidity", "voltage"]
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


@pytest.fixture
def ingest_db(db: Settings) -> Iterator[Settings]:
    """Empty database with the test fleet registered, and an empty landing zone."""
    shutil.rmtree(db.landing_dir, ignore_errors=True)
    with connect(Role.OWNER, db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, case when id like 'GEN%%' then 'generator' else 'pump' end, 'north' "
            "from unnest(%s::text[]) as id",
            (EQUIPMENT,),
        )
    yield db
    shutil.rmtree(db.landing_dir, ignore_errors=True)


@pytest.fixture
def landing(ingest_db: Settings) -> Landing:
    return Landing(ingest_db.landing_dir).ensure()


@pytest.fixture
def drops(landing: Landing) -> Drops:
    return Drops(landing)


@pytest.fixture
def query(ingest_db: Settings):
    """Run a read query as owner and return all rows."""

    def run(sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(_owner_url(ingest_db), autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    return run


def _owner_url(settings: Settings) -> str:
    from emps.db import database_url

    return database_url(Role.OWNER, settings)
