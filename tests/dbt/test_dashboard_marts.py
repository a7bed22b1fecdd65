"""The dashboard's health marts: predictions and last readings from tables the scoring flow
refreshes, alerts and tasks live from the ops tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from dbt_testdata import insert_equipment, read_table

from emps import transform
from emps.actions import set_threshold
from emps.queries import DASHBOARD_MARTS

HEALTH = (
    "select equipment_id, severity, failure_probability, last_reading_at, is_silent, "
    "open_alert_status, next_task_type, prediction_as_of from analytics.mart_equipment_health "
    "order by equipment_id"
)


def add_reading(conn, equipment_id: str, ts: datetime) -> None:
    conn.execute(
        "insert into raw.sensor_readings (equipment_id, ts, temperature) values (%s, %s, 60)",
        (equipment_id, ts),
    )


def add_prediction(conn, equipment_id: str, ts: datetime, probability: float, severity: str):
    conn.execute(
        "insert into ops.predictions (equipment_id, ts, failure_probability, health_score, "
        "severity, model_version) values (%s, %s, %s, %s, %s, '1')",
        (equipment_id, ts, probability, round(100 * (1 - probability)), severity),
    )


@pytest.fixture
def marts(writer, db):
    """Two equipment, GEN-1 reporting and scored LOW, GEN-2 never heard from; the dashboard
    marts built from scratch on them."""
    now = datetime.now(UTC).replace(microsecond=0)
    insert_equipment(writer, [("GEN-1", "generator", "alpha"), ("GEN-2", "generator", "alpha")])
    add_reading(writer, "GEN-1", now - timedelta(minutes=30))
    add_reading(writer, "GEN-1", now - timedelta(minutes=5))
    add_prediction(writer, "GEN-1", now - timedelta(minutes=30), 0.1, "LOW")
    selection = [f"+{mart}" for mart in DASHBOARD_MARTS]
    summary = transform.run_dbt(
        transform.dbt_args(["run"], db, select=selection, full_refresh=True), db
    )
    assert summary.success, summary.describe_failures()
    return now


def test_refresh_after_scoring_shows_the_new_prediction(marts, writer, db):
    """A prediction written by a scoring run shows on the health mart once the refresh the
    scoring flow runs has run; a late prediction for an older feature row does not replace it."""
    now = marts
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "severity"] == "LOW"
    assert health.loc["GEN-1", "last_reading_at"] == pd.Timestamp(now - timedelta(minutes=5))
    assert not health.loc["GEN-1", "is_silent"]
    assert pd.isna(health.loc["GEN-2", "severity"]) and health.loc["GEN-2", "is_silent"]
    first_as_of = health.loc["GEN-1", "prediction_as_of"]

    add_reading(writer, "GEN-1", now - timedelta(minutes=1))
    add_prediction(writer, "GEN-1", now - timedelta(minutes=1), 0.9, "CRITICAL")
    assert transform.refresh_dashboard_state(db) is not None
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "severity"] == "CRITICAL"
    assert health.loc["GEN-1", "failure_probability"] == pytest.approx(0.9)
    assert health.loc["GEN-1", "last_reading_at"] == pd.Timestamp(now - timedelta(minutes=1))
    assert health.loc["GEN-1", "prediction_as_of"] > first_as_of

    # A backlog scored late: newer predicted_at, older feature row.
    add_prediction(writer, "GEN-1", now - timedelta(minutes=20), 0.5, "MEDIUM")
    add_reading(writer, "GEN-1", now - timedelta(minutes=20))
    transform.refresh_dashboard_state(db)
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "severity"] == "CRITICAL"
    assert health.loc["GEN-1", "last_reading_at"] == pd.Timestamp(now - timedelta(minutes=1))


def test_alert_and_task_changes_show_without_a_refresh(marts, writer, db):
    """Acknowledging an alert or scheduling a task shows on the health mart at once."""
    alert_id = writer.execute(
        "insert into ops.alerts (equipment_id, severity, message) "
        "values ('GEN-1', 'HIGH', 'vibration rising') returning id"
    ).fetchone()[0]
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "open_alert_status"] == "open"
    assert pd.isna(health.loc["GEN-1", "next_task_type"])

    writer.execute(
        "update ops.alerts set status = 'acknowledged', acknowledged_at = now(), "
        "acknowledged_by = 'tech' where id = %s",
        (alert_id,),
    )
    writer.execute(
        "insert into ops.maintenance_tasks (equipment_id, alert_id, task_type, priority, "
        "scheduled_date) values ('GEN-1', %s, 'inspection', 1, now() + interval '1 day')",
        (alert_id,),
    )
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "open_alert_status"] == "acknowledged"
    assert health.loc["GEN-1", "next_task_type"] == "inspection"


def test_silent_limit_an_admin_sets_applies_at_once(marts, admin, db):
    """Equipment counts as silent after the limit set on the dashboard, without a rebuild, on
    the health mart and in the fleet overview's counts."""
    overview = "select severity, is_silent, equipment from analytics.mart_fleet_overview"
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert not health.loc["GEN-1", "is_silent"]  # last reading 5 minutes ago, limit 15
    set_threshold(admin, "silent_minutes", 3, db)
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "is_silent"] and health.loc["GEN-2", "is_silent"]
    counts = read_table(db, overview)
    assert counts.loc[counts["is_silent"], "equipment"].sum() == 2
    assert set(counts["severity"]) == {"UNSCORED"}  # a silent equipment's prediction aged out


def test_scoring_defers_the_refresh_while_a_backlog_drains(prefect_server, marts, writer, db):
    """While drop files wait (each batch is scored right after the last), a scoring run leaves
    the dashboard's refresh to a later one, at most a minute apart; once the landing zone is
    empty, scoring shows its predictions at once."""
    from prefect import flow

    import emps.flows.score as score
    from emps.ingest.landing import Landing

    @flow
    def refresh() -> float | None:
        return score.refresh_dashboard_state()

    now = marts
    assert refresh() is not None  # nothing waits: refreshed
    add_reading(writer, "GEN-1", now - timedelta(minutes=1))
    add_prediction(writer, "GEN-1", now - timedelta(minutes=1), 0.9, "CRITICAL")
    waiting = Landing(db.landing_dir).ensure().incoming / "GEN-1-next.csv"
    waiting.write_text("equipment_id,ts,temperature\nGEN-1,2026-01-01T00:00:00Z,60\n")
    try:
        assert refresh() is None
        assert read_table(db, HEALTH).set_index("equipment_id").loc["GEN-1", "severity"] == "LOW"
        # A minute after the last refresh, a backlog no longer holds it back.
        score._last_refresh[0] -= score.DASHBOARD_REFRESH_MAX_LAG_S
        assert refresh() is not None
    finally:
        waiting.unlink()
    health = read_table(db, HEALTH).set_index("equipment_id")
    assert health.loc["GEN-1", "severity"] == "CRITICAL"
