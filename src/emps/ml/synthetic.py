"""A synthetic stand-in for analytics.mart_training_examples, shaped exactly like the dbt contract.

Degrading equipment drifts on one sensor for a few days before it fails, so a model can learn
something; healthy equipment only has noise. For the tests and the benches that need many
labelled rows fast, not for the platform.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import psycopg

from emps.catalog import Catalog
from emps.db import Role, connect
from emps.settings import Settings


def feature_names(catalog: Catalog) -> list[str]:
    return catalog.feature_names()


def training_examples(
    catalog: Catalog,
    equipment: int = 40,
    days: int = 120,
    step_hours: int = 4,
    seed: int = 0,
    horizon_days: int = 7,
    signal: float = 1.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(examples, failure events) for `equipment` machines over `days` days."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    times = pd.date_range(start, periods=days * 24 // step_hours, freq=f"{step_hours}h")
    types = catalog.type_names
    sensors = catalog.sensor_names
    frames, failures = [], []
    for index in range(equipment):
        etype = types[index % len(types)]
        equipment_id = f"EQ-{index:04d}"
        fail_times = []
        # Failures from a stream of their own: the feature draws below do not move them.
        events = np.random.default_rng([seed, index])
        t = start + pd.Timedelta(days=float(events.uniform(5, 30)))
        while t < times[-1] and index % 2 == 0:
            fail_times.append(t)
            t += pd.Timedelta(days=float(events.uniform(20, 30)))
        n = len(times)
        severity = np.zeros(n)
        next_failure = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
        excluded = np.zeros(n, dtype=bool)
        for failed_at in fail_times:
            onset = failed_at - pd.Timedelta(days=float(events.uniform(6, 10)))
            ramp = ((times - onset) / (failed_at - onset)).to_numpy(dtype=float)
            active = (times >= onset) & (times < failed_at)
            severity = np.where(active, np.clip(ramp, 0, 1), severity)
            before = (times < failed_at) & next_failure.isna().to_numpy()
            next_failure[before] = failed_at
            repaired_at = failed_at + pd.Timedelta(hours=12)
            excluded |= (times >= failed_at) & (times < repaired_at)
            failures.append((equipment_id, failed_at, repaired_at))
        driver = sensors[index % len(sensors)]
        windows = range(1, catalog.window_count + 1)
        data = {}
        for s in sensors:
            # Levels: norm standard deviations from the type's norm, as the feature table has.
            drift = severity * 6 * signal if s == driver else 0.0
            level = rng.normal(0, 1, n) + drift
            data[f"{s}_now"] = level
            for k in windows:
                data[f"{s}_mean_w{k}"] = level + rng.normal(0, 1 / 3, n)
                data[f"{s}_std_w{k}"] = np.abs(rng.normal(1, 0.2, n))
                data[f"{s}_slope_w{k}"] = rng.normal(0, 0.1, n) + (
                    severity * signal if s == driver else 0
                )
                data[f"{s}_outside_w{k}"] = np.clip(np.abs(level) / 10, 0, 1)
            data[f"{s}_dev_lag"] = level
            data[f"{s}_drift_lag"] = level + rng.normal(0, 0.2, n)
            data[f"{s}_site_drift_lag"] = rng.normal(0, 0.2, n) + drift / 2
        data["missing_rate"] = np.clip(rng.normal(0.02, 0.01, n), 0, 1)
        data["since_maintenance"] = rng.uniform(0, 2000, n)
        # From the failures' stream, so the draws above stay as they were.
        data["baseline_age"] = events.uniform(240, 264, n)
        frame = pd.DataFrame(data)
        frame.insert(0, "equipment_id", equipment_id)
        frame.insert(1, "ts", times)
        frame.insert(2, "equipment_type", etype)
        frame.insert(3, "site", f"SITE-{index % 3}")
        frame["next_failure_at"] = next_failure
        days_left = (frame["next_failure_at"] - frame["ts"]).dt.total_seconds() / 86400
        frame["days_until_failure"] = days_left
        frame["fails_within_horizon"] = (days_left <= horizon_days).fillna(False).astype(bool)
        frames.append(frame[~excluded])
    events = pd.DataFrame(failures, columns=["equipment_id", "failed_at", "repaired_at"])
    return pd.concat(frames, ignore_index=True), events


def load_examples(frame: pd.DataFrame, settings: Settings, relation: str) -> None:
    """Replace `relation` with `frame` and register its equipment in raw.equipment."""
    schema, table = relation.split(".")
    columns = []
    for name, dtype in frame.dtypes.items():
        if name in ("equipment_id", "equipment_type", "site"):
            kind = "text"
        elif name in ("ts", "next_failure_at"):
            kind = "timestamptz"
        elif pd.api.types.is_bool_dtype(dtype):
            kind = "boolean"
        else:
            kind = "double precision"
        columns.append(
            psycopg.sql.SQL("{} {}").format(psycopg.sql.Identifier(name), psycopg.sql.SQL(kind))
        )
    target = psycopg.sql.Identifier(schema, table)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, float_format="%.10g")
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            psycopg.sql.SQL("create schema if not exists {}").format(psycopg.sql.Identifier(schema))
        )
        conn.execute(psycopg.sql.SQL("drop table if exists {}").format(target))
        conn.execute(
            psycopg.sql.SQL("create table {} ({})").format(
                target, psycopg.sql.SQL(", ").join(columns)
            )
        )
        conn.execute(psycopg.sql.SQL("create index on {} (equipment_id, ts)").format(target))
        conn.execute(
            psycopg.sql.SQL("grant usage on schema {} to emps_reader").format(
                psycopg.sql.Identifier(schema)
            )
        )
        conn.execute(psycopg.sql.SQL("grant select on {} to emps_reader").format(target))
        with conn.cursor().copy(
            psycopg.sql.SQL("copy {} from stdin with (format csv)").format(target)
        ) as copy:
            copy.write(buffer.getvalue())
        equipment = frame.drop_duplicates("equipment_id")
        conn.cursor().executemany(
            "insert into raw.equipment (equipment_id, equipment_type, site) values (%s, %s, %s) "
            "on conflict do nothing",
            list(equipment[["equipment_id", "equipment_type", "site"]].itertuples(index=False)),
        )
