"""Test data for the dbt tests: readings written straight into raw tables (no simulator)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

from emps.db import Role, connect
from emps.settings import Settings

SENSORS = ("temperature", "vibration", "pressure", "humidity", "voltage")


def insert_equipment(conn: psycopg.Connection, rows: Iterable[tuple[str, str, str]]) -> None:
    conn.cursor().executemany(
        "insert into raw.equipment (equipment_id, equipment_type, site) values (%s, %s, %s)",
        list(rows),
    )


def insert_readings(conn: psycopg.Connection, frame: pd.DataFrame) -> None:
    """Copy a frame with equipment_id, ts and sensor columns into raw.sensor_readings."""
    columns = ["equipment_id", "ts", *[s for s in SENSORS if s in frame.columns]]
    with conn.cursor().copy(
        f"copy raw.sensor_readings ({', '.join(columns)}) from stdin"  # noqa: S608 - fixed names
    ) as copy:
        for row in frame[columns].itertuples(index=False):
            copy.write_row([None if isinstance(v, float) and np.isnan(v) else v for v in row])


def series(
    equipment_id: str,
    start: datetime,
    periods: int,
    minutes: int = 10,
    seed: int = 0,
    drift_per_hour: float = 0.0,
) -> pd.DataFrame:
    """A regular series of readings around a generator's healthy band, optionally drifting."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=periods, freq=f"{minutes}min", tz="UTC")
    hours = np.arange(periods) * minutes / 60
    return pd.DataFrame(
        {
            "equipment_id": equipment_id,
            "ts": ts,
            "temperature": 80 + rng.normal(0, 2, periods) + drift_per_hour * hours,
            "vibration": 3 + rng.normal(0, 0.3, periods),
            "pressure": 360 + rng.normal(0, 10, periods),
            "humidity": 40 + rng.normal(0, 5, periods),
            "voltage": 410 + rng.normal(0, 3, periods),
        }
    )


def read_table(settings: Settings, query: str) -> pd.DataFrame:
    with connect(Role.OWNER, settings) as conn, conn.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=names)
    if "ts" in frame.columns:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
