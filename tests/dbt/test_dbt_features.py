"""The dbt feature table against an independent pandas computation, incremental runs, leakage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from dbt_testdata import SENSORS, insert_equipment, insert_readings, read_table, series

from emps import transform
from emps.catalog import load_catalog

WINDOWS = (1, 6, 24)
# Float64 one-pass (dbt) against two-pass / least squares (numpy) sums: agree to ~1e-12;
# the assertion allows 1e-7 relative plus 1e-9 absolute.
RTOL, ATOL = 1e-7, 1e-9
FEATURE_MODELS = ["+fct_equipment_features"]


def gappy_series(equipment_id: str, start: datetime, seed: int) -> pd.DataFrame:
    """40 h of 10-minute readings with random drops, a 5 h outage, missing sensor values and a
    last hour at a 1-minute cadence."""
    rng = np.random.default_rng(seed)
    frame = series(equipment_id, start, periods=240, seed=seed, drift_per_hour=0.3)
    keep = rng.random(len(frame)) > 0.3
    outage = (frame["ts"] >= start + timedelta(hours=20)) & (
        frame["ts"] < start + timedelta(hours=25)
    )
    frame = frame[keep & ~outage].copy()
    frame.loc[frame.sample(frac=0.1, random_state=seed).index, "vibration"] = np.nan
    fast = series(equipment_id, start + timedelta(hours=40), periods=60, minutes=1, seed=seed + 1)
    return pd.concat([frame, fast], ignore_index=True)


def site_relative_hours(
    readings: pd.DataFrame, sites: dict[str, str], norms: dict[str, tuple[float, float]]
) -> pd.DataFrame:
    """Per equipment and clock hour, each sensor's hour mean against the median of its site's
    equipment that hour, in norm standard deviations (index: equipment_id, hour)."""
    hours = readings.assign(hour=readings["ts"].dt.floor("h"))
    hours = hours.groupby(["equipment_id", "hour"])[list(SENSORS)].mean()
    for sensor in SENSORS:
        low, high = norms[sensor]
        hours[sensor] = (hours[sensor] - (low + high) / 2) / ((high - low) / 4)
    site = hours.index.get_level_values("equipment_id").map(sites)
    level = hours.groupby([site, hours.index.get_level_values("hour")]).transform("median")
    return hours - level


def reference_features(
    readings: pd.DataFrame, norms: dict[str, tuple[float, float]], sites: dict[str, str]
) -> pd.DataFrame:
    """The contract's features computed with pandas rolling windows, one equipment at a time."""
    relative = site_relative_hours(readings, sites, norms)
    out = []
    for equipment_id, frame in readings.groupby("equipment_id"):
        frame = frame.sort_values("ts").set_index("ts")
        first = frame.index[0]
        result: dict[str, object] = {"equipment_id": equipment_id}
        baseline = frame[frame.index < first + pd.Timedelta(hours=24)]
        for sensor in SENSORS:
            values = frame[sensor]
            for w in WINDOWS:
                rolling = values.rolling(f"{w}h")
                result[f"{sensor}_mean_{w}h"] = rolling.mean()
                result[f"{sensor}_std_{w}h"] = rolling.std()
                result[f"{sensor}_min_{w}h"] = rolling.min()
                result[f"{sensor}_max_{w}h"] = rolling.max()
                result[f"{sensor}_slope_{w}h"] = [
                    _slope(
                        values[(values.index > t - pd.Timedelta(hours=w)) & (values.index <= t)], t
                    )
                    for t in values.index
                ]
            mean_1h = result[f"{sensor}_mean_1h"]
            after = frame.index >= first + pd.Timedelta(hours=24)
            result[f"{sensor}_dev_baseline"] = np.where(
                after, (mean_1h - baseline[sensor].mean()) / baseline[sensor].std(), np.nan
            )
            low, high = norms[sensor]
            norm_std = (high - low) / 4
            result[f"{sensor}_dev_fleet"] = (mean_1h - (low + high) / 2) / norm_std
            result[f"{sensor}_drift_24h"] = np.where(
                after, (result[f"{sensor}_mean_24h"] - baseline[sensor].mean()) / norm_std, np.nan
            )
            result[f"{sensor}_spread_24h"] = result[f"{sensor}_std_24h"] / norm_std
            # The 24 whole hours before t's hour, against the baseline period's whole hours.
            own = relative.loc[equipment_id, sensor]
            in_baseline = (own.index >= first.floor("h")) & (
                own.index + pd.Timedelta(hours=1) <= first + pd.Timedelta(hours=24)
            )
            day = pd.Timedelta(hours=24)
            last_day = np.array(
                [
                    own[(own.index >= h - day) & (own.index < h)].mean()
                    for h in frame.index.floor("h")
                ]
            )
            result[f"{sensor}_site_drift_24h"] = np.where(
                after, last_day - own[in_baseline].mean(), np.nan
            )
        # Ten-minute UTC clock slots: the 144 ending with the one holding t, readings up to t.
        slot = pd.Timedelta(minutes=10)
        missing = []
        for t in frame.index:
            start = t.floor(slot) - pd.Timedelta(hours=24) + slot
            window = frame.index[(frame.index >= start) & (frame.index <= t)]
            filled = len({r.floor(slot) for r in window})
            expected = min(144, int((t.floor(slot) - first.floor(slot)) // slot) + 1)
            missing.append(max(0.0, 1 - filled / expected))
        result["missing_rate_24h"] = missing
        result["hours_since_maintenance"] = (frame.index - first).total_seconds() / 3600
        out.append(pd.DataFrame(result, index=frame.index).reset_index())
    return pd.concat(out, ignore_index=True)


def _slope(window: pd.Series, t: pd.Timestamp) -> float:
    window = window.dropna()
    if len(window) < 2:
        return np.nan
    hours = (window.index - t).total_seconds() / 3600
    return float(np.polyfit(hours, window.to_numpy(), 1)[0])


def dbt_features(settings) -> pd.DataFrame:
    return read_table(
        settings, "select * from analytics.fct_equipment_features order by equipment_id, ts"
    )


def assert_features_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    merged = expected.merge(actual, on=["equipment_id", "ts"], suffixes=("_pd", "_dbt"))
    assert len(merged) == len(expected) == len(actual)
    for column in expected.columns.drop(["equipment_id", "ts"], errors="ignore"):
        if column in {"equipment_type", "site"}:
            continue
        want = merged[f"{column}_pd"].astype(float).to_numpy()
        got = merged[f"{column}_dbt"].astype(float).to_numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=column)


@pytest.fixture
def two_gappy_generators(writer, db):
    start = datetime(2026, 3, 1, tzinfo=UTC)
    # One site: each one's level against the site's is against the other's.
    insert_equipment(writer, [("GEN-1", "generator", "alpha"), ("GEN-2", "generator", "alpha")])
    readings = pd.concat([gappy_series("GEN-1", start, 1), gappy_series("GEN-2", start, 2)])
    insert_readings(writer, readings)
    return readings


def test_features_match_an_independent_pandas_computation(two_gappy_generators, db):
    """Every window statistic, deviation and missing rate equals pandas on gappy series."""
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db)
    catalog = load_catalog(db.catalog_path)
    norms = {s: catalog.envelope("generator", s) for s in SENSORS}
    expected = reference_features(two_gappy_generators, norms, {"GEN-1": "alpha", "GEN-2": "alpha"})
    actual = dbt_features(db)
    assert actual.columns[:4].tolist() == ["equipment_id", "ts", "equipment_type", "site"]
    assert_features_equal(actual, expected)
    # Both warm 0.3 degC an hour, as a site's weather would warm them: a drift from their own
    # baselines, and none against their site.
    later = actual[actual["temperature_drift_24h"].notna()]
    assert later["temperature_drift_24h"].max() > 0.9
    assert later["temperature_site_drift_24h"].abs().max() < 0.1


def test_incremental_run_adds_new_readings_without_touching_history(
    two_gappy_generators, writer, db
):
    """A run after new readings adds exactly their rows; old rows keep their values (no
    leakage of later readings into earlier features) and new rows equal a full rebuild."""
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db)
    before = dbt_features(db)
    last = two_gappy_generators["ts"].max()
    extra = pd.concat(
        [
            series(e, last + timedelta(minutes=1), periods=3, minutes=1, seed=9)
            for e in ("GEN-1", "GEN-2")
        ]
    )
    insert_readings(writer, extra)
    summary = transform.build(
        select=["int_sensor_readings_hourly", "int_site_hourly_levels", "fct_equipment_features"],
        settings=db,
    )
    assert any(n.name == "fct_equipment_features" for n in summary.nodes)
    after = dbt_features(db)
    assert len(after) == len(before) + len(extra)
    old = after.merge(before[["equipment_id", "ts"]], on=["equipment_id", "ts"])
    pd.testing.assert_frame_equal(
        old.sort_values(["equipment_id", "ts"]).reset_index(drop=True),
        before.sort_values(["equipment_id", "ts"]).reset_index(drop=True),
    )
    transform.build(select=["fct_equipment_features"], full_refresh=True, settings=db)
    rebuilt = dbt_features(db).drop(columns="ingested_at")
    assert_features_equal(after.drop(columns="ingested_at"), rebuilt)


def test_site_levels_of_an_hour_still_filling_match_a_rebuild_once_it_is_over(
    two_gappy_generators, writer, db
):
    """The site's level for the current hour waits until a later hour arrives; readings that
    land in that hour meanwhile count, and the next hour's site drift equals a full rebuild's."""
    selection = ["int_sensor_readings_hourly", "int_site_hourly_levels", "fct_equipment_features"]
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db)
    hour = two_gappy_generators["ts"].max().floor("h") + timedelta(hours=1)
    for start, periods in (
        (hour, 3),
        (hour + timedelta(minutes=30), 2),
        (hour + timedelta(hours=1), 3),
    ):
        extra = pd.concat(
            [
                series(e, start, periods=periods, minutes=1, seed=11, drift_per_hour=2.0).assign(
                    temperature=lambda f, e=e: f["temperature"] + (30 if e == "GEN-2" else 0)
                )
                for e in ("GEN-1", "GEN-2")
            ]
        )
        insert_readings(writer, extra)
        # No look-back: as if each run came long after the last, so an unfinished hour is found
        # from its placeholder, not from readings landing in it again.
        transform.build(select=selection, settings=db, extra_vars={"ingest_lookback_minutes": 0})
    live = dbt_features(db).drop(columns="ingested_at")
    next_hour = live[live["ts"] >= hour + timedelta(hours=1)]
    assert len(next_hour) == 6 and next_hour["temperature_site_drift_24h"].notna().all()
    transform.build(select=selection, full_refresh=True, settings=db)
    assert_features_equal(live, dbt_features(db).drop(columns="ingested_at"))


def test_training_examples_label_failures_and_skip_downtime(writer, db):
    """Rows within 7 days before a failure are positive, rows between failure and repair are
    left out, and days_until_failure counts down to the failure."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    insert_equipment(writer, [("GEN-9", "generator", "alpha")])
    insert_readings(writer, series("GEN-9", start, periods=24 * 12, minutes=60))
    failed_at = start + timedelta(days=8)
    repaired_at = failed_at + timedelta(days=1)
    writer.execute(
        "insert into raw.failure_events (equipment_id, failed_at, repaired_at) values (%s, %s, %s)",
        ("GEN-9", failed_at, repaired_at),
    )
    transform.build(
        select=["+fct_equipment_features", "mart_training_examples"], full_refresh=True, settings=db
    )
    examples = read_table(db, "select * from analytics.mart_training_examples order by ts")
    ts = examples["ts"]
    assert not ((ts >= failed_at) & (ts < repaired_at)).any()
    assert len(examples) == 24 * 12 - 24
    positive = examples[examples["fails_within_horizon"]]
    assert positive["ts"].min() == failed_at - timedelta(days=7)
    assert positive["ts"].max() == failed_at - timedelta(hours=1)
    row = examples[examples["ts"] == failed_at - timedelta(days=2)].iloc[0]
    assert row["days_until_failure"] == pytest.approx(2.0)
    after_repair = examples[examples["ts"] >= repaired_at]
    assert after_repair["next_failure_at"].isna().all()
    assert not after_repair["fails_within_horizon"].any()
