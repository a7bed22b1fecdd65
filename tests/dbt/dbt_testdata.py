"""Test data for the dbt tests: readings written straight into raw tables (no simulator), for
whatever catalog the test uses."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np
import pandas as pd
import psycopg

from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect
from emps.settings import Settings


def first_type(catalog: Catalog | None = None) -> str:
    """The installed catalog's first equipment type (the tests' machines are of it)."""
    catalog = catalog or load_catalog()
    return catalog.type_names[0]


def insert_equipment(conn: psycopg.Connection, rows: Iterable[tuple[str, str, str | None]]) -> None:
    conn.cursor().executemany(
        "insert into raw.equipment (equipment_id, equipment_type, site) values (%s, %s, %s)",
        list(rows),
    )


def insert_readings(conn: psycopg.Connection, frame: pd.DataFrame, catalog: Catalog | None = None):
    """Copy a frame with equipment_id, ts, [cycle] and channel columns into raw.sensor_readings."""
    catalog = catalog or load_catalog()
    columns = ["equipment_id", "ts"]
    columns += [c for c in ("cycle", *catalog.channel_names) if c in frame.columns]
    with conn.cursor().copy(
        f"copy raw.sensor_readings ({', '.join(columns)}) from stdin"  # noqa: S608 - catalog names
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
    catalog: Catalog | None = None,
    equipment_type: str | None = None,
) -> pd.DataFrame:
    """A regular series of readings inside a type's healthy bands (the middle half of the
    valid range where the catalog gives none), the first sensor optionally drifting."""
    catalog = catalog or load_catalog()
    etype = equipment_type or first_type(catalog)
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, periods=periods, freq=f"{minutes}min", tz="UTC")
    hours = np.arange(periods) * minutes / 60
    frame = pd.DataFrame({"equipment_id": equipment_id, "ts": ts})
    for i, channel in enumerate(catalog.type_sensors(etype)):
        low, high = catalog.envelope(etype, channel) or _middle(catalog, channel)
        values = rng.normal((low + high) / 2, (high - low) / 8, periods)
        frame[channel] = values + (drift_per_hour * hours if i == 0 else 0.0)
    return frame


def _middle(catalog: Catalog, channel: str) -> tuple[float, float]:
    low, high = catalog.channels[channel].valid_range
    quarter = (high - low) / 4
    return low + quarter, high - quarter


def read_table(settings: Settings, query: str) -> pd.DataFrame:
    with connect(Role.OWNER, settings) as conn, conn.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description]
        frame = pd.DataFrame(cur.fetchall(), columns=names)
    if "ts" in frame.columns:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame
