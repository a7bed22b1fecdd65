"""The dbt feature table against an independent pandas computation, incremental runs on both
paths, the cadence, labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from dbt_testdata import first_type, insert_equipment, insert_readings, read_table, series
from feature_reference import reference_features, trailing_period

from emps import transform
from emps.catalog import Catalog, load_catalog
from emps.db import Role, database_url

# Float64 running sums (dbt) against two-pass / least squares (numpy): agree to ~1e-10.
RTOL, ATOL = 1e-6, 1e-8
FEATURE_MODELS = ["+fct_equipment_features"]


def gappy_series(equipment_id: str, start: datetime, seed: int) -> pd.DataFrame:
    """40 h of 10-minute readings with random drops, a 5 h outage, missing sensor values and a
    last hour at a 1-minute cadence."""
    catalog = load_catalog()
    rng = np.random.default_rng(seed)
    frame = series(equipment_id, start, periods=240, seed=seed, drift_per_hour=0.3)
    keep = rng.random(len(frame)) > 0.3
    outage = (frame["ts"] >= start + timedelta(hours=20)) & (
        frame["ts"] < start + timedelta(hours=25)
    )
    frame = frame[keep & ~outage].copy()
    second = catalog.type_sensors(first_type(catalog))[1]
    frame.loc[frame.sample(frac=0.1, random_state=seed).index, second] = np.nan
    fast = series(equipment_id, start + timedelta(hours=40), periods=60, minutes=1, seed=seed + 1)
    return pd.concat([frame, fast], ignore_index=True)


def dbt_features(settings) -> pd.DataFrame:
    return read_table(
        settings, "select * from analytics.fct_equipment_features order by equipment_id, slot"
    )


def assert_features_equal(actual: pd.DataFrame, expected: pd.DataFrame, columns=None) -> None:
    merged = expected.merge(actual, on=["equipment_id", "slot"], suffixes=("_pd", "_dbt"))
    assert len(merged) == len(expected) == len(actual)
    for column in columns or load_catalog().feature_names():
        want = merged[f"{column}_pd"].astype(float).to_numpy()
        got = merged[f"{column}_dbt"].astype(float).to_numpy()
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=column)


def with_trailing_baseline(catalog: Catalog, lag_hours: float = 6, hours: float = 3) -> Catalog:
    """The catalog with every type's baseline periods `hours` long, each slot compared with the
    last one ending `lag_hours` or more before it: the default (a day, two failure horizons
    back) is longer than these tests' histories."""
    types = {}
    for name, etype in catalog.equipment_types.items():
        lag = round(lag_hours * 3600 / etype.slot_seconds)
        baseline = round(hours * 3600 / etype.slot_seconds)
        features = etype.features.model_copy(update={"baseline_lag": lag, "baseline": baseline})
        types[name] = etype.model_copy(update={"features": features})
    return catalog.model_copy(update={"equipment_types": types})


def trailing(rows: pd.DataFrame, catalog: Catalog) -> pd.Series:
    """Whether each feature row's baseline is a trailing period (not the machine's first)."""
    grid = catalog.equipment_types[first_type(catalog)].features
    first = rows.groupby("equipment_id")["slot"].transform("min")
    period = rows["slot"].map(lambda slot: trailing_period(slot, grid))
    return period * grid.baseline >= first


def registry(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["equipment_id", "equipment_type", "site"])


@pytest.fixture
def two_gappy_machines(writer, db):
    """Two machines, M-2 failing 30 h in and repaired an hour later."""
    start = datetime(2026, 3, 1, tzinfo=UTC)
    kind = first_type()
    # One site: each one's level against the site's is against the other's.
    rows = [("M-1", kind, "alpha"), ("M-2", kind, "alpha")]
    insert_equipment(writer, rows)
    readings = pd.concat([gappy_series("M-1", start, 1), gappy_series("M-2", start, 2)])
    insert_readings(writer, readings)
    failures = pd.DataFrame(
        {
            "equipment_id": ["M-2"],
            "failed_at": [start + timedelta(hours=30)],
            "repaired_at": [start + timedelta(hours=31)],
        }
    )
    writer.cursor().executemany(
        "insert into raw.failure_events (equipment_id, failed_at, repaired_at) values (%s, %s, %s)",
        list(failures.itertuples(index=False)),
    )
    return readings, registry(rows), failures


def test_features_match_an_independent_pandas_computation(two_gappy_machines, db):
    """Every window statistic, deviation, missing rate and time since service equals pandas on
    gappy series, one row per occupied slot, against the first baseline and the trailing one,
    and after a failure against the last period before it (the ones up to the repair skipped)."""
    catalog = with_trailing_baseline(load_catalog(db.catalog_path))
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    readings, equipment, failures = two_gappy_machines
    expected = reference_features(readings, equipment, catalog, failures=failures)
    actual = dbt_features(db)
    assert trailing(actual, catalog).any() and not trailing(actual, catalog).all()
    assert actual.columns[:5].tolist() == ["equipment_id", "slot", "ts", "equipment_type", "site"]
    assert_features_equal(actual, expected)
    # The failure moved the baselines of M-2's rows after it, and of no other row.
    unskipped = reference_features(readings, equipment, catalog)
    name = f"{load_catalog().sensor_names[0]}_drift_lag"
    moved = expected[~np.isclose(expected[name], unskipped[name], equal_nan=True)]
    assert len(moved) > 0 and set(moved["equipment_id"]) == {"M-2"}
    assert moved["ts"].min() >= failures["failed_at"].iloc[0]
    # A young machine is compared with its first span, and its rows say so: their baseline
    # ended under the lag (6 h) before them, a trailing period's at least the lag.
    first = load_catalog().sensor_names[0]
    m1_rows = actual[actual["equipment_id"] == "M-1"]
    compared = m1_rows[f"{first}_drift_lag"].notna()
    young = compared & ~trailing(actual, catalog).loc[m1_rows.index]
    assert young.any() and (m1_rows.loc[young, "baseline_age"] < 6).all()
    later_rows = compared & trailing(actual, catalog).loc[m1_rows.index]
    assert later_rows.any() and (m1_rows.loc[later_rows, "baseline_age"] >= 6).all()
    # Both warm alike, as a site's weather would warm them: standard deviations away from their
    # own baselines hours back, and no drift against their site.
    later = actual[trailing(actual, catalog)]
    assert later[f"{first}_dev_lag"].abs().max() > 2
    assert later[f"{first}_site_drift_lag"].abs().max() < 0.3


@pytest.mark.parametrize("path", ["lateral", "window"])
def test_incremental_runs_match_a_full_rebuild(two_gappy_machines, writer, db, path):
    """Runs after new readings, whichever path they take (a few slots read by index, or a large
    import's moving windows), leave the table a full rebuild would build; the slot still
    filling is rebuilt when more readings land in it."""
    catalog = with_trailing_baseline(load_catalog(db.catalog_path))
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    before = dbt_features(db)
    readings, _, _ = two_gappy_machines
    last = readings["ts"].max()
    forced = {"feature_lateral_max_slots": 0} if path == "window" else {}
    for start, periods in ((last + timedelta(minutes=1), 3), (last + timedelta(minutes=4), 15)):
        extra = pd.concat(
            [series(e, start, periods=periods, minutes=1, seed=9) for e in ("M-1", "M-2")]
        )
        insert_readings(writer, extra)
        transform.build(
            selector=transform.AFTER_INGEST_SELECTOR,
            settings=db,
            catalog=catalog,
            extra_vars=forced,
        )
    after = dbt_features(db)
    assert len(after) > len(before)
    assert trailing(after, catalog).any()
    # Slots that were over are not touched: no later reading leaks into them.
    last_slot = before["equipment_id"].map(before.groupby("equipment_id")["slot"].max())
    settled = before[before["slot"] < last_slot].reset_index(drop=True)
    kept = after.merge(settled[["equipment_id", "slot"]], on=["equipment_id", "slot"])
    pd.testing.assert_frame_equal(kept, settled)
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    assert_features_equal(after, dbt_features(db))


def test_a_rebuild_from_a_given_time_matches_the_full_rebuild_from_then_on(two_gappy_machines, db):
    """A full refresh with var features_since (what bench/features.py times at 10,000
    equipment) builds only the rows from then on, each equal to the whole history's build: their
    windows and baseline periods still read the slots before it, also across a failure's
    skipped periods."""
    catalog = with_trailing_baseline(load_catalog(db.catalog_path))
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    whole = dbt_features(db)
    readings, _, _ = two_gappy_machines
    since = readings["ts"].min() + timedelta(hours=34)  # after M-2's repair
    transform.build(
        select=FEATURE_MODELS,
        full_refresh=True,
        settings=db,
        catalog=catalog,
        extra_vars={"features_since": since.isoformat()},
        # The unit tests' fixed rows are older than features_since.
        extra_args=["--exclude-resource-type", "unit_test"],
    )
    partial = dbt_features(db)
    assert len(partial) and (partial["ts"] >= since).all()
    later = whole["ts"] >= since
    assert (later & trailing(whole, catalog)).any()
    expected = whole[later].reset_index(drop=True)
    assert_features_equal(partial, expected)


def test_a_late_reading_updates_its_own_slot_and_the_newest(two_gappy_machines, writer, db):
    """Readings that arrive late, for slots before the newest, recompute those slots' rows, and
    the next reading in the newest slot sees them in its windows and in its baseline period:
    those rows equal a full rebuild's (rows in between keep their values until a full build)."""
    catalog = with_trailing_baseline(load_catalog(db.catalog_path))
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    readings, _, _ = two_gappy_machines
    own = readings.loc[readings["equipment_id"] == "M-1", "ts"]
    last = own.max()
    width = load_catalog().equipment_types[first_type()].features.slot
    grid = catalog.equipment_types[first_type()].features
    newest_period = trailing_period(int(last.timestamp() // width), grid)
    # The last reading of a ten-minute slot five hours back, and of one in the newest slot's
    # baseline period (10-minute readings come at the start of their slots): their slots'
    # values change.
    late = []
    for hours in (5, 10):
        at = (last - timedelta(hours=hours)).floor("10min") + timedelta(minutes=9, seconds=30)
        reading = series("M-1", at, periods=1, seed=20 + hours)
        reading.iloc[:, 2:] = reading.iloc[:, 2:] * 1.05
        late.append(reading)
    late = pd.concat(late, ignore_index=True)
    assert int(late["ts"].iloc[1].timestamp() // width) // grid.baseline == newest_period
    insert_readings(writer, late)
    transform.build(selector=transform.AFTER_INGEST_SELECTOR, settings=db, catalog=catalog)
    insert_readings(writer, series("M-1", last + timedelta(seconds=30), periods=1, seed=22))
    transform.build(selector=transform.AFTER_INGEST_SELECTOR, settings=db, catalog=catalog)
    live = dbt_features(db)
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db, catalog=catalog)
    rebuilt = dbt_features(db)
    touched = {int(t.timestamp() // width) for t in [*late["ts"], last + timedelta(seconds=30)]}

    def pick(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[(frame["equipment_id"] == "M-1") & frame["slot"].isin(touched)]

    assert len(pick(live)) == 3
    assert trailing(live, catalog)[pick(live).index].all()
    assert_features_equal(pick(live), pick(rebuilt))


def test_a_load_left_open_across_a_build_is_built_once_it_commits(two_gappy_machines, writer, db):
    """A reading is stamped when its load begins (ingested_at is the transaction's start) and
    seen when the load commits: one still open while a later load commits and a build runs
    is built by the next build after it commits, however long it stayed open (no look-back
    margin here), because a build reads back to the oldest load open when it began."""
    catalog = with_trailing_baseline(load_catalog(db.catalog_path))
    no_margin = {"ingest_lookback_minutes": 0}

    def build(**how) -> None:
        transform.build(settings=db, catalog=catalog, extra_vars=no_margin, **how)

    def has_slot(rows: pd.DataFrame, equipment_id: str, at: datetime) -> bool:
        width = catalog.equipment_types[first_type(catalog)].features.slot
        own = rows[rows["equipment_id"] == equipment_id]
        return int(at.timestamp() // width) in set(own["slot"])

    build(select=FEATURE_MODELS, full_refresh=True)
    readings, _, _ = two_gappy_machines
    slow_at = readings["ts"].max() + timedelta(minutes=20)
    quick_at = readings["ts"].max() + timedelta(minutes=40)
    with psycopg.connect(database_url(Role.OWNER, db)) as slow:  # one transaction until commit
        insert_readings(slow, series("M-1", slow_at, periods=1, seed=30))
        insert_readings(writer, series("M-2", quick_at, periods=1, seed=31))
        build(selector=transform.AFTER_INGEST_SELECTOR)
        during = dbt_features(db)
        assert has_slot(during, "M-2", quick_at) and not has_slot(during, "M-1", slow_at)
        slow.commit()
    build(selector=transform.AFTER_INGEST_SELECTOR)
    assert has_slot(dbt_features(db), "M-1", slow_at)


def test_the_reading_cadence_does_not_change_the_features(writer, db):
    """A device reading every minute and a backfill reading every ten minutes, agreeing on the
    last reading of each slot, get the same features."""
    kind = first_type()
    start = datetime(2026, 3, 1, tzinfo=UTC)
    insert_equipment(writer, [("SLOW-1", kind, None), ("FAST-1", kind, None)])
    slow = series("SLOW-1", start + timedelta(minutes=9), periods=6 * 30, seed=4)
    fast = series("FAST-1", start, periods=60 * 30, minutes=1, seed=5)
    # Every tenth fast reading (the last of its slot) is the slow one.
    fast.iloc[9::10, 2:] = slow.iloc[:, 2:].to_numpy()
    insert_readings(writer, pd.concat([slow, fast.assign(equipment_id="FAST-1")]))
    transform.build(select=FEATURE_MODELS, full_refresh=True, settings=db)
    rows = dbt_features(db).set_index(["equipment_id", "slot"])
    names = load_catalog().feature_names()
    slow_rows = rows.loc["SLOW-1", names].reset_index(drop=True)
    fast_rows = rows.loc["FAST-1", names].reset_index(drop=True)
    pd.testing.assert_frame_equal(slow_rows, fast_rows, check_exact=False, rtol=RTOL)


def test_training_examples_label_failures_and_skip_downtime(writer, db):
    """Rows within the type's horizon before a failure are positive, rows between failure and
    repair are left out, days and remaining life count down to the failure, and the last
    horizon of a history that stops without a failure is not final."""
    catalog = load_catalog()
    kind = first_type(catalog)
    horizon = timedelta(seconds=catalog.equipment_types[kind].horizon_seconds)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    insert_equipment(writer, [("M-9", kind, "alpha")])
    insert_readings(writer, series("M-9", start, periods=24 * 20, minutes=60))
    failed_at = start + timedelta(days=8)
    repaired_at = failed_at + timedelta(days=1)
    writer.execute(
        "insert into raw.failure_events (equipment_id, failed_at, repaired_at) values (%s, %s, %s)",
        ("M-9", failed_at, repaired_at),
    )
    transform.build(
        select=["+fct_equipment_features", "mart_training_examples"], full_refresh=True, settings=db
    )
    examples = read_table(db, "select * from analytics.mart_training_examples order by ts")
    ts = examples["ts"]
    assert not ((ts >= failed_at) & (ts < repaired_at)).any()
    assert len(examples) == 24 * 20 - 24
    positive = examples[examples["fails_within_horizon"]]
    assert positive["ts"].min() == failed_at - horizon
    assert positive["ts"].max() == failed_at - timedelta(hours=1)
    row = examples[examples["ts"] == failed_at - timedelta(days=2)].iloc[0]
    assert row["days_until_failure"] == pytest.approx(2.0)
    assert row["remaining_life"] == pytest.approx(2.0)  # days, for a wall-time type
    after_repair = examples[examples["ts"] >= repaired_at]
    assert after_repair["next_failure_at"].isna().all()
    assert not after_repair["fails_within_horizon"].any()
    # The history ends without a failure: its last horizon may still precede one.
    end = ts.max()
    open_rows = examples[~examples["label_is_final"]]
    assert open_rows["ts"].min() > end - horizon
    assert (examples[ts <= end - horizon]["label_is_final"]).all()
