"""Assessment: a prediction says when it cannot be trusted, so a stuck or silent sensor, or a
machine gone quiet, never reads as a healthy LOW."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from emps import queries, transform
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml import predict, registry
from emps.ml.assess import INSUFFICIENT_DATA, OK, OUT_OF_DISTRIBUTION, SETTLING, assess_matrix
from emps.ml.train import train_and_register
from tests.dashboard_state import refresh_dashboard_state

SLOT = timedelta(minutes=10)


def readings(equipment_id: str, end: datetime, hours: float, seed: int) -> pd.DataFrame:
    """A healthy generator's readings every 10 minutes up to `end`, inside its bands."""
    catalog = load_catalog()
    rng = np.random.default_rng(seed)
    periods = int(hours * 6)
    ts = pd.date_range(end=end, periods=periods, freq="10min", tz="UTC")
    frame = pd.DataFrame({"equipment_id": equipment_id, "ts": ts})
    for sensor in catalog.type_sensors("generator"):
        low, high = catalog.envelope("generator", sensor)
        frame[sensor] = (low + high) / 2 + (high - low) / 8 * rng.normal(0, 1, periods)
    return frame


def insert(conn, frame: pd.DataFrame) -> None:
    columns = list(frame.columns)
    statement = f"copy raw.sensor_readings ({', '.join(columns)}) from stdin"  # noqa: S608
    with conn.cursor().copy(statement) as copy:
        for row in frame.itertuples(index=False):
            copy.write_row([None if isinstance(v, float) and np.isnan(v) else v for v in row])


@pytest.fixture(scope="module")
def champion(database, small_forests, synthetic_examples):
    """A champion trained once for the module's scoring tests (they read, never retrain)."""
    settings = database.replace(
        ml={
            "model_name": f"equipment-failure-assess-{uuid.uuid4().hex[:8]}",
            **small_forests,
        }
    )
    examples, failures = synthetic_examples
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "tester", settings, examples, failures)
    return settings, version


@pytest.fixture
def scoring(champion, dashboard_marts, owner_conn):
    """The champion, four generators with two days of readings ending now, and settings that
    score the real feature table."""
    settings, version = champion
    predict.forget_cached_models()
    # Each test starts from an empty promotion history: the champion's promotion is on it again.
    registry.promote(
        version, "tester", "first champion: no model was in production", settings=settings
    )
    owner_conn.execute(
        "insert into raw.equipment (equipment_id, equipment_type, site) values "
        "('GEN-OK', 'generator', 'alpha'), ('GEN-STUCK', 'generator', 'alpha'), "
        "('GEN-MUTE', 'generator', 'alpha'), ('GEN-QUIET', 'generator', 'alpha')"
    )
    return settings.replace(ml={"features_relation": "analytics.fct_equipment_features"})


def build_and_score(settings, equipment: list[str]) -> pd.DataFrame:
    """One dbt build and one scoring round; the predictions it wrote."""
    transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=settings)
    predict.score_equipment(settings, equipment_ids=equipment, emit_events=False)
    with connect(Role.OWNER, settings) as conn:
        cur = conn.execute(
            "select distinct on (equipment_id) equipment_id, severity, remaining_life, "
            "assessment, assessment_reason from ops.predictions order by equipment_id, id desc"
        )
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description]).set_index(
            "equipment_id"
        )


def test_a_stuck_or_silent_sensor_is_insufficient_data_within_one_scoring_round(
    scoring, owner_conn
):
    """A vibration sensor stuck at one value, or silent, for the last two hours: the next
    scoring round marks the prediction insufficient_data and names the sensor, the severity
    keeps its band, and the fleet overview shows the assessment beside it; a healthy machine
    reads ok."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    healthy = readings("GEN-OK", now, 48, seed=1)
    stuck = readings("GEN-STUCK", now, 48, seed=2)
    stuck.loc[stuck["ts"] > now - timedelta(hours=2), "vibration"] = 4.2
    mute = readings("GEN-MUTE", now, 48, seed=3)
    mute.loc[mute["ts"] > now - timedelta(hours=2), "vibration"] = np.nan
    for frame in (healthy, stuck, mute):
        insert(owner_conn, frame)
    scored = build_and_score(scoring, ["GEN-OK", "GEN-STUCK", "GEN-MUTE"])

    assert scored.loc["GEN-OK", "assessment"] == OK
    assert scored.loc["GEN-STUCK", "assessment"] == INSUFFICIENT_DATA
    assert (
        scored.loc["GEN-STUCK", "assessment_reason"]
        == "vibration stuck: no change over the last 1 h"
    )
    assert scored.loc["GEN-MUTE", "assessment"] == INSUFFICIENT_DATA
    assert scored.loc["GEN-MUTE", "assessment_reason"] == "no vibration readings over the last 1 h"
    assert scored["severity"].isin(["LOW", "MEDIUM", "HIGH", "CRITICAL"]).all()
    assert scored["remaining_life"].notna().all()

    refresh_dashboard_state(scoring)
    fleet = queries.fleet_health(settings=scoring).set_index("equipment_id")
    assert fleet.loc["GEN-STUCK", "assessment"] == INSUFFICIENT_DATA
    assert "vibration stuck" in fleet.loc["GEN-STUCK", "assessment_reason"]
    assert fleet.loc["GEN-OK", "assessment"] == OK


def test_a_silent_machine_s_last_prediction_ages_out_after_the_silence_limit(scoring, owner_conn):
    """A machine scored while it reported, then silent for two hours (limit 15 minutes): the
    dashboard no longer shows its old severity or remaining life as current, reads
    insufficient_data with how long it has been silent, and keeps what the last prediction
    said."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    insert(owner_conn, readings("GEN-QUIET", now - timedelta(hours=2), 48, seed=4))
    insert(owner_conn, readings("GEN-OK", now, 48, seed=1))
    scored = build_and_score(scoring, ["GEN-QUIET", "GEN-OK"])
    refresh_dashboard_state(scoring)
    fleet = queries.fleet_health(settings=scoring).set_index("equipment_id")
    quiet = fleet.loc["GEN-QUIET"]
    assert pd.isna(quiet["severity"]) and pd.isna(quiet["remaining_life"])
    assert quiet["last_severity"] == scored.loc["GEN-QUIET", "severity"]
    assert quiet["assessment"] == INSUFFICIENT_DATA
    assert quiet["assessment_reason"].startswith("no readings for 12")
    assert quiet["assessment_reason"].endswith("(silence limit 15 min)")
    assert fleet.loc["GEN-OK", "severity"] == scored.loc["GEN-OK", "severity"]
    assert fleet.loc["GEN-OK", "assessment"] == OK


def test_a_machine_repaired_two_hours_ago_scores_settling_on_the_dashboard(scoring, owner_conn):
    """A failure recorded and repaired two hours ago: the next scoring round marks the machine
    settling (its 24 h windows still hold the failing machine), and the fleet overview shows it
    so; its severity keeps its band."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    insert(owner_conn, readings("GEN-OK", now, 48, seed=1))
    owner_conn.execute(
        "insert into raw.failure_events (equipment_id, failed_at, repaired_at) values "
        "('GEN-OK', %s, %s)",
        (now - timedelta(hours=5), now - timedelta(hours=2)),
    )
    scored = build_and_score(scoring, ["GEN-OK"])
    assert scored.loc["GEN-OK", "assessment"] == SETTLING
    reason = scored.loc["GEN-OK", "assessment_reason"]
    assert reason.startswith("serviced or repaired ") and reason.endswith(
        "ago: its last 24 h still hold readings from before that"
    )
    assert scored.loc["GEN-OK", "severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")
    refresh_dashboard_state(scoring)
    fleet = queries.fleet_health(settings=scoring).set_index("equipment_id")
    assert fleet.loc["GEN-OK", "assessment"] == SETTLING


def test_levels_far_outside_the_training_data_are_out_of_distribution(settings):
    """A sensor reading far beyond every level the model saw (a broken sensor) makes the
    prediction out_of_distribution, naming the feature; a usual level stays ok."""
    catalog = load_catalog(settings.catalog_path)
    names = catalog.feature_names()
    profile = {"low": {"voltage_now": -4.0}, "high": {"voltage_now": 5.0}}
    X = np.ones((2, len(names)))  # every sensor reporting and moving, a baseline, no gaps
    X[:, names.index("missing_rate")] = 0.0
    X[:, names.index("since_maintenance")] = 500.0
    X[:, names.index("voltage_now")] = [1.0, -60.0]
    labels = {"voltage_now": ["voltage level now", "voltage"]}
    ok, broken = assess_matrix(X, np.array(["generator"] * 2), names, catalog, profile, labels)
    assert ok.state == OK
    assert broken.state == OUT_OF_DISTRIBUTION
    assert broken.reason.startswith("voltage level now -60 far outside what training saw")


def test_a_machine_serviced_within_its_longest_window_is_settling(settings):
    """Serviced or repaired 2.5 h ago, a generator's 24 h windows still hold readings from
    before the work: settling, told in hours; 30 h on it is ok; a new machine with no baseline
    yet is told as such, not as settling."""
    catalog = load_catalog(settings.catalog_path)
    names = catalog.feature_names()
    X = np.ones((3, len(names)))
    X[:, names.index("missing_rate")] = 0.0
    X[:, names.index("since_maintenance")] = [2.5, 30.0, 2.5]
    X[2, [names.index(f"{s}_dev_lag") for s in catalog.type_sensors("generator")]] = np.nan
    serviced, later, new = assess_matrix(X, np.array(["generator"] * 3), names, catalog)
    assert serviced.state == SETTLING
    assert serviced.reason == (
        "serviced or repaired 2.5 h ago: its last 24 h still hold readings from before that"
    )
    assert later.state == OK
    assert new.state == INSUFFICIENT_DATA and new.reason.startswith("no baseline yet")
