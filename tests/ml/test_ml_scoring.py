"""Scoring: predictions written with the domain's severity and health, alias moves, registry outages."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pandas as pd
import pytest

from emps.actions import set_threshold
from emps.db import Role, connect
from emps.domain import health_score_for, severity_for
from emps.ml import predict, registry, synthetic
from emps.ml.train import train_and_register
from emps.processes import free_port
from emps.settings import Settings


def champion_version(settings, examples, failures) -> str:
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "tester", settings, examples, failures)
    return version


@pytest.fixture(scope="module")
def trained(database, small_forests, synthetic_examples) -> tuple[str, str, str]:
    """Two versions of one registered model, trained once for the module's tests that only
    promote, move or read aliases: (model name, first version, second version)."""
    settings = database.replace(
        ml={"model_name": f"equipment-failure-scoring-{uuid.uuid4().hex[:8]}", **small_forests}
    )
    examples, failures = synthetic_examples
    first = train_and_register(settings, examples, failures).version
    second = train_and_register(settings, examples, failures).version
    return settings.ml.model_name, first, second


@pytest.fixture
def models(trained, ml_settings) -> tuple[Settings, str, str]:
    """This test's settings on the module's registered model, which has no alias yet:
    (settings, first version, second version)."""
    name, first, second = trained
    settings = ml_settings.replace(ml={"model_name": name})
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        if registry.alias_version(alias, settings) is not None:
            registry.client(settings).delete_registered_model_alias(name, alias)
    return settings, first, second


def promoted(models, examples, failures) -> tuple[Settings, str]:
    """The module's first version made champion by the gate, as after a first training."""
    settings, first, _ = models
    registry.run_gate(first, "tester", settings, examples, failures)
    return settings, first


def stored_predictions(settings) -> pd.DataFrame:
    with connect(Role.OWNER, settings) as conn:
        rows = conn.execute(
            "select id, equipment_id, ts, failure_probability, health_score, severity, "
            "days_until_failure, remaining_life, life_unit, remaining_life_beyond, assessment, "
            "assessment_reason, model_version, explanation from ops.predictions order by id"
        ).fetchall()
    columns = [
        "id",
        "equipment_id",
        "ts",
        "failure_probability",
        "health_score",
        "severity",
        "days_until_failure",
        "remaining_life",
        "life_unit",
        "remaining_life_beyond",
        "assessment",
        "assessment_reason",
        "model_version",
        "explanation",
    ]
    return pd.DataFrame(rows, columns=columns)


def test_scoring_writes_one_prediction_per_equipment_with_domain_rules(models, examples_in_db):
    """Each equipment's latest row gets a prediction whose severity and health follow DESIGN.md,
    with a remaining life and an assessment at every severity; scoring unchanged features again
    writes the same figures."""
    examples, failures = examples_in_db
    ml_settings, version = promoted(models, examples, failures)
    report = predict.score_equipment(ml_settings, emit_events=False)
    stored = stored_predictions(ml_settings)
    latest = examples.groupby("equipment_id")["ts"].max()
    assert report.model_version == version and report.scored == len(latest) == len(stored)
    assert dict(zip(stored["equipment_id"], stored["ts"], strict=True)) == latest.to_dict()
    for row in stored.itertuples():
        assert row.severity == severity_for(row.failure_probability, ml_settings.thresholds).value
        assert row.health_score == health_score_for(row.failure_probability)
        assert row.model_version == version
        # Remaining life at every severity, in the type's unit, and an assessment on each.
        assert row.remaining_life >= 0 and row.life_unit == "day"
        assert row.days_until_failure == pytest.approx(row.remaining_life, abs=0.01)
        assert row.assessment in ("ok", "insufficient_data", "out_of_distribution")
        assert (row.assessment_reason is None) == (row.assessment == "ok")
        assert row.explanation[0]["label"] and "contribution" in row.explanation[0]
    assert (stored["severity"] == "LOW").any()
    again = predict.score_equipment(ml_settings, emit_events=False)
    assert again.scored == 0
    # A second scoring round of the same (unchanged) features reads exactly the same.
    predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    rescored = stored_predictions(ml_settings).iloc[len(stored) :]
    columns = ["equipment_id", "failure_probability", "remaining_life", "assessment"]
    pd.testing.assert_frame_equal(
        rescored[columns].reset_index(drop=True), stored[columns].reset_index(drop=True)
    )


def test_bands_an_admin_sets_reach_the_next_scoring_run(models, examples_in_db, admin):
    """Severity follows the dashboard's thresholds (ops.thresholds), not only EMPS_SEVERITY_*."""
    examples, failures = examples_in_db
    ml_settings, _ = promoted(models, examples, failures)
    predict.score_equipment(ml_settings, emit_events=False)
    before = stored_predictions(ml_settings)
    below_critical = before[
        (before["failure_probability"] > 0)
        & (before["failure_probability"] < ml_settings.thresholds.severity_critical)
    ]
    assert not below_critical.empty
    top = below_critical.loc[below_critical["failure_probability"].idxmax()]
    # Lower bands first, so that they rise at every step (the dashboard checks each change).
    for key, value in [
        ("severity_medium", top.failure_probability / 4),
        ("severity_high", top.failure_probability / 2),
        ("severity_critical", top.failure_probability),
    ]:
        set_threshold(admin, key, value, ml_settings)
    predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    after = stored_predictions(ml_settings).iloc[len(before) :]
    severity = dict(zip(after["equipment_id"], after["severity"], strict=True))
    assert severity[top.equipment_id] == "CRITICAL" != top.severity
    live = ml_settings.replace(
        thresholds={
            "severity_medium": top.failure_probability / 4,
            "severity_high": top.failure_probability / 2,
            "severity_critical": top.failure_probability,
        }
    )
    for row in after.itertuples():
        assert row.severity == severity_for(row.failure_probability, live.thresholds).value
    one = predict.predict_equipment(top.equipment_id, settings=ml_settings)
    assert one["severity"] == "CRITICAL"


def test_moving_the_alias_changes_the_model_of_the_next_run(models, examples_in_db):
    """An ML engineer moving `champion` in MLflow switches scoring at once and the move is recorded."""
    examples, failures = examples_in_db
    ml_settings, first = promoted(models, examples, failures)
    second = models[2]
    assert predict.score_equipment(ml_settings, emit_events=False).model_version == first
    registry.client(ml_settings).set_registered_model_alias(
        ml_settings.ml.model_name, registry.CHAMPION, second
    )
    report = predict.score_equipment(ml_settings, only_unscored=False, emit_events=False)
    assert report.model_version == second and report.champion_moved_in_ui
    assert set(stored_predictions(ml_settings)["model_version"]) == {first, second}
    with connect(Role.OWNER, ml_settings) as conn:
        last = conn.execute(
            "select from_version, to_version, promoted_by from ops.model_promotions "
            "order by id desc limit 1"
        ).fetchone()
    assert last == (first, second, "mlflow-ui")


def test_registry_outage_keeps_scoring_with_the_cached_champion(models, examples_in_db):
    """With the registry unreachable, scoring goes on with the champion it had, and says so."""
    examples, failures = examples_in_db
    ml_settings, version = promoted(models, examples, failures)
    predict.score_equipment(ml_settings, emit_events=False)
    down = ml_settings.replace(ml={"mlflow_tracking_uri": f"http://127.0.0.1:{free_port()}"})
    report = predict.score_equipment(down, only_unscored=False, emit_events=False)
    assert report.registry_unreachable and report.model_version == version
    assert report.scored == examples["equipment_id"].nunique()
    predict.forget_cached_models()
    with pytest.raises(predict.RegistryUnavailable, match="cannot be reached"):
        predict.score_equipment(down, emit_events=False)


def test_no_champion_fails_with_what_to_do(ml_settings, examples_in_db):
    """Without any promoted model, scoring stops and tells the user how to get one."""
    with pytest.raises(predict.NoChampion, match="emps model train"):
        predict.score_equipment(ml_settings, emit_events=False)


def test_what_if_prediction_reacts_to_the_readings(models, examples_in_db):
    """The dashboard's what-if: pushing a drifting sensor's features up raises the risk."""
    examples, failures = examples_in_db
    ml_settings, _ = promoted(models, examples, failures)
    healthy = examples[~examples["fails_within_horizon"]]
    equipment = "EQ-0006"  # fails, and its drifting sensor is vibration (6 % 5 sensors = 1)
    worst = examples[examples["equipment_id"] == equipment]
    worst = worst[worst["days_until_failure"] < 0.5]
    assert len(worst) and len(healthy)
    base = predict.predict_equipment(equipment, settings=ml_settings)
    drifting = [c for c in worst.columns if c.startswith("vibration")]
    what_if = predict.predict_equipment(
        equipment, {c: float(worst[c].iloc[-1]) for c in drifting}, ml_settings
    )
    assert what_if["failure_probability"] > base["failure_probability"]
    with pytest.raises(ValueError, match="not features"):
        predict.predict_equipment(equipment, {"site": 1.0}, ml_settings)
    with pytest.raises(LookupError, match="no feature rows"):
        predict.predict_equipment("EQ-9999", settings=ml_settings)


def test_flow_emits_events_for_high_and_critical_predictions(
    prefect_server, ml_env, examples_in_db
):
    """The score-equipment flow emits emps.prediction.high/critical with the contract's payload."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    from emps.flows.score import score_equipment

    examples, failures = examples_in_db
    champion_version(ml_env, examples, failures)
    # Make sure some equipment is failing now: its latest row is one from just before a failure.
    failing = examples[examples["days_until_failure"] < 0.5].groupby("equipment_id").tail(1)
    failing = failing.assign(ts=examples["ts"].max() + pd.Timedelta(hours=1))
    recent = examples[examples["ts"] > examples["ts"].max() - pd.Timedelta(days=1)]
    synthetic.load_examples(
        pd.concat([recent, failing], ignore_index=True), ml_env, ml_env.ml.features_relation
    )
    # Other tests share this Prefect server and reuse prediction ids: only count this run's events.
    started = datetime.now(UTC)
    summary = score_equipment()
    stored = stored_predictions(ml_env)
    alerting = stored[stored["severity"].isin(["HIGH", "CRITICAL"])]
    assert summary["scored"] == len(stored) and summary["events"] == len(alerting) > 0
    # The run raised their alerts itself, one per equipment, before the events went out.
    assert len(summary["alerts"]["alerts"]) == alerting["equipment_id"].nunique()

    async def read() -> list:
        async with get_client() as client:
            page = await client.read_events(
                filter=EventFilter(event=EventNameFilter(prefix=["emps.prediction."])), limit=50
            )
            return page.events

    events = []
    deadline = time.monotonic() + 60  # events reach the server asynchronously
    while len(events) < len(alerting) and time.monotonic() < deadline:
        time.sleep(1)
        events = [e for e in asyncio.run(read()) if e.payload.get("model_version")]
        events = [e for e in events if e.payload["prediction_id"] in set(alerting["id"])]
        events = [e for e in events if e.occurred >= started]
    assert len(events) == len(alerting)
    row = alerting.iloc[0]
    event = next(e for e in events if e.payload["prediction_id"] == row["id"])
    assert event.event == f"emps.prediction.{row['severity'].lower()}"
    assert event.resource.id == f"equipment.{row['equipment_id']}"
    # Its alert was raised by the run: the alert flow's trigger does not start on it.
    assert event.resource.get("emps.alert-handled") == "true"
    assert set(event.payload) == {
        "prediction_id",
        "prediction_ts",
        "equipment_id",
        "failure_probability",
        "severity",
        "days_until_failure",
        "remaining_life",
        "life_unit",
        "assessment",
        "model_version",
    }
    assert pd.Timestamp(event.payload["prediction_ts"]) == row["ts"]
