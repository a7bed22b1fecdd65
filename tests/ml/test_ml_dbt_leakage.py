"""The model's features (dbt) at time t use only what was known at t."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from emps import transform
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml.dataset import feature_columns, read_latest_features


def readings(start: datetime, periods: int, vibration: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "equipment_id": "GEN-1",
            "ts": pd.date_range(start, periods=periods, freq="10min", tz="UTC"),
            "temperature": 80 + rng.normal(0, 2, periods),
            "vibration": vibration + rng.normal(0, 0.3, periods),
            "pressure": 360 + rng.normal(0, 10, periods),
            "humidity": 40 + rng.normal(0, 5, periods),
            "voltage": 410 + rng.normal(0, 3, periods),
        }
    )


def insert(conn, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    with conn.cursor().copy(
        f"copy raw.sensor_readings ({', '.join(columns)}) from stdin"  # noqa: S608 - fixed names
    ) as copy:
        for row in frame.itertuples(index=False):
            copy.write_row(list(row))


def test_features_at_t_ignore_later_readings_and_failures(owner_conn, db):
    """Rebuilding after later readings (a failure and repair among them) leaves earlier features as
    they were, so training rows cannot see their own future."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    owner_conn.execute(
        "insert into raw.equipment (equipment_id, equipment_type, site) "
        "values ('GEN-1', 'generator', 'alpha')"
    )
    past = readings(start, 2 * 144, vibration=3.0, seed=1)
    insert(owner_conn, past)
    transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=db)
    settings = db.replace(ml={"features_relation": "analytics.fct_equipment_features"})
    before = read_latest_features(settings, only_unscored=False)

    future_start = past["ts"].max().to_pydatetime() + timedelta(minutes=10)
    insert(owner_conn, readings(future_start, 144, vibration=40.0, seed=2))
    owner_conn.execute(
        "insert into raw.failure_events (equipment_id, failed_at, repaired_at, source) "
        "values ('GEN-1', %s, %s, 'operator')",
        (future_start + timedelta(hours=20), future_start + timedelta(hours=22)),
    )
    transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=db)
    with connect(Role.OWNER, db) as conn:
        after_row = conn.execute(
            "select count(*) from analytics.fct_equipment_features where ts <= %s",
            (before["ts"].iloc[0].to_pydatetime(),),
        ).fetchone()
    assert after_row[0] == len(past)

    # The same timestamp as `before`, read again after the rebuild with the future present.
    frame = _row_at(settings, before["ts"].iloc[0])
    features = feature_columns(list(before.columns), load_catalog(db.catalog_path))
    assert len(features) > 80
    pd.testing.assert_frame_equal(
        frame[features].reset_index(drop=True),
        before[features].reset_index(drop=True),
        check_exact=False,
        rtol=1e-9,
    )


def _row_at(settings, ts) -> pd.DataFrame:
    from psycopg import sql

    from emps.ml.dataset import _read_frame

    query = sql.SQL("select * from analytics.fct_equipment_features where ts = %s")
    return _read_frame(query, (ts.to_pydatetime(),), settings)
