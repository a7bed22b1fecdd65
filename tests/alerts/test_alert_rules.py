"""Alert rules: one alert per problem, escalation on a worse prediction, tasks, auto-resolve."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alert_testdata import add_equipment, write_prediction

from emps.alerting.rules import (
    PredictionKey,
    auto_resolve,
    escalate_unacknowledged,
    process_pending,
    process_prediction,
)
from emps.db import Role, connect


def _rows(settings, sql, *params):
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(sql, params).fetchall()


def test_critical_prediction_opens_one_alert_with_corrective_task_and_mail_rows(
    alert_settings, crew
):
    """A CRITICAL prediction opens an alert, a corrective task before the failure, and one
    outbox email per technician of the site."""
    add_equipment(alert_settings, "GEN-0001")
    payload = write_prediction(alert_settings, "GEN-0001", 0.93, "CRITICAL", days=4.0)
    outcome = process_prediction(payload, alert_settings, crew)
    assert outcome.action == "opened"
    assert outcome.notifications == 2
    tasks = _rows(
        alert_settings,
        "select task_type, priority, scheduled_date - now() from ops.maintenance_tasks",
    )
    assert len(tasks) == 1
    task_type, priority, lead = tasks[0]
    assert (task_type, priority) == ("corrective", 2)
    assert timedelta(days=1.9) < lead < timedelta(days=4)
    recipients = _rows(alert_settings, "select recipient from ops.notifications order by 1")
    assert recipients == [("alpha2@crews.example",), ("alpha@crews.example",)]


def test_same_event_processed_twice_gives_one_alert(alert_settings, crew):
    """Replaying the same prediction event changes nothing: one alert, one task, same mail rows."""
    add_equipment(alert_settings, "GEN-0002")
    payload = write_prediction(alert_settings, "GEN-0002", 0.9, "CRITICAL")
    first = process_prediction(payload, alert_settings, crew)
    second = process_prediction(payload, alert_settings, crew)
    assert (first.action, second.action) == ("opened", "duplicate")
    assert second.alert_id == first.alert_id
    counts = _rows(
        alert_settings,
        "select (select count(*) from ops.alerts), (select count(*) from ops.maintenance_tasks),"
        " (select count(*) from ops.notifications)",
    )
    assert counts == [(1, 1, 2)]


def test_worse_prediction_escalates_the_open_alert_and_renotifies(alert_settings, crew):
    """HIGH then CRITICAL for one equipment: one alert raised to CRITICAL, its inspection turned
    corrective, and a second notification; a later HIGH notifies nobody."""
    add_equipment(alert_settings, "GEN-0003")
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    high = write_prediction(alert_settings, "GEN-0003", 0.7, "HIGH", ts=t0, days=9.0)
    critical = write_prediction(
        alert_settings, "GEN-0003", 0.96, "CRITICAL", ts=t0 + timedelta(minutes=1), days=2.0
    )
    later_high = write_prediction(
        alert_settings, "GEN-0003", 0.7, "HIGH", ts=t0 + timedelta(minutes=2)
    )
    outcomes = [process_prediction(p, alert_settings, crew) for p in (high, critical, later_high)]
    assert [o.action for o in outcomes] == ["opened", "escalated", "updated"]
    assert [o.notifications for o in outcomes] == [2, 2, 0]
    assert _rows(alert_settings, "select severity, status from ops.alerts") == [
        ("CRITICAL", "open")
    ]
    assert _rows(alert_settings, "select task_type, priority from ops.maintenance_tasks") == [
        ("corrective", 1)
    ]


def test_low_prediction_is_ignored(alert_settings, crew):
    """A MEDIUM prediction creates no alert."""
    add_equipment(alert_settings, "GEN-0004")
    payload = write_prediction(alert_settings, "GEN-0004", 0.4, "MEDIUM")
    assert process_prediction(payload, alert_settings, crew).action == "ignored"
    assert _rows(alert_settings, "select count(*) from ops.alerts") == [(0,)]


def test_a_prediction_settling_after_a_repair_opens_and_raises_nothing(alert_settings, crew):
    """A CRITICAL prediction made while a repair settles (its windows still hold the failing
    machine) opens no alert, task or mail; nor does it raise an open HIGH alert; once the
    machine is past it, a CRITICAL prediction does."""
    add_equipment(alert_settings, "GEN-0009")
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    settling = write_prediction(
        alert_settings, "GEN-0009", 0.95, "CRITICAL", ts=t0, assessment="settling"
    )
    assert process_prediction(settling, alert_settings, crew).action == "settling"
    counts = "select (select count(*) from ops.alerts), (select count(*) from ops.notifications)"
    assert _rows(alert_settings, counts) == [(0, 0)]

    high = write_prediction(alert_settings, "GEN-0009", 0.7, "HIGH", ts=t0 + timedelta(minutes=1))
    assert process_prediction(high, alert_settings, crew).action == "opened"
    settling_again = write_prediction(
        alert_settings,
        "GEN-0009",
        0.97,
        "CRITICAL",
        ts=t0 + timedelta(minutes=2),
        assessment="settling",
    )
    assert process_prediction(settling_again, alert_settings, crew).action == "settling"
    assert _rows(alert_settings, "select severity from ops.alerts") == [("HIGH",)]
    critical = write_prediction(
        alert_settings, "GEN-0009", 0.97, "CRITICAL", ts=t0 + timedelta(minutes=3)
    )
    assert process_prediction(critical, alert_settings, crew).action == "escalated"
    assert _rows(alert_settings, "select severity from ops.alerts") == [("CRITICAL",)]


def test_unacknowledged_critical_escalates_and_acknowledging_stops_it(alert_settings, crew):
    """A CRITICAL alert left open past the delay goes to the supervisor, then the manager; once
    acknowledged, no further escalation happens."""
    add_equipment(alert_settings, "GEN-0005")
    payload = write_prediction(alert_settings, "GEN-0005", 0.9, "CRITICAL")
    alert_id = process_prediction(payload, alert_settings, crew).alert_id
    delay = timedelta(minutes=alert_settings.alerting.escalation_delay_min + 1)
    now = datetime.now(UTC)
    assert escalate_unacknowledged(alert_settings, crew, now=now).escalated == []
    first = escalate_unacknowledged(alert_settings, crew, now=now + delay)
    assert first.escalated == [alert_id]
    second = escalate_unacknowledged(alert_settings, crew, now=now + 2 * delay)
    assert second.escalated == [alert_id]
    with connect(Role.OWNER, alert_settings) as conn:  # a person acts: the CLI on the server
        conn.execute("select ops.acknowledge_alert(%s, 'tech.jones')", (alert_id,))
    third = escalate_unacknowledged(alert_settings, crew, now=now + 3 * delay)
    assert third.escalated == []
    escalations = _rows(
        alert_settings,
        "select recipient from ops.notifications where event = 'alert.unacknowledged' order by id",
    )
    assert escalations == [("boss@crews.example",), ("manager@crews.example",)]
    minutes = _rows(
        alert_settings,
        "select acknowledged_at - created_at >= interval '0' from ops.alerts where id = %s",
        alert_id,
    )
    assert minutes == [(True,)]


def test_completed_task_resolves_its_alert(alert_settings, crew):
    """Completing the alert's maintenance task resolves the alert automatically."""
    add_equipment(alert_settings, "GEN-0006")
    payload = write_prediction(alert_settings, "GEN-0006", 0.9, "CRITICAL")
    outcome = process_prediction(payload, alert_settings, crew)
    with connect(Role.OWNER, alert_settings) as conn:  # a person acts: the CLI on the server
        conn.execute(
            "select ops.complete_maintenance_task(%s, 'fault_found', 'tech')", (outcome.task_id,)
        )
    assert auto_resolve(alert_settings) == [outcome.alert_id]
    assert _rows(alert_settings, "select status, resolved_by from ops.alerts") == [
        ("resolved", "emps-auto-resolve")
    ]


def test_equipment_healthy_for_the_period_resolves_its_alert(alert_settings, crew):
    """An alert whose equipment had only LOW predictions for the healthy period is resolved."""
    add_equipment(alert_settings, "GEN-0007")
    hours = alert_settings.alerting.auto_resolve_healthy_hours
    then = datetime.now(UTC) - timedelta(hours=hours + 2)
    payload = write_prediction(alert_settings, "GEN-0007", 0.7, "HIGH", ts=then)
    outcome = process_prediction(payload, alert_settings, crew, now=then)
    write_prediction(alert_settings, "GEN-0007", 0.1, "LOW")
    assert auto_resolve(alert_settings) == [outcome.alert_id]


def test_event_payload_errors_name_the_field():
    """A payload without a prediction id or with a naive timestamp is refused by name; pandas'
    nanosecond timestamps are accepted."""
    base = {
        "prediction_id": 1,
        "prediction_ts": "2026-11-27T17:00:00.123456789+00:00",
        "equipment_id": "GEN-0001",
        "failure_probability": 0.9,
        "severity": "CRITICAL",
    }
    assert PredictionKey.from_payload(base).prediction_ts.microsecond == 123456
    with pytest.raises(ValueError, match="lacks prediction_id"):
        PredictionKey.from_payload({**base, "prediction_id": None})
    with pytest.raises(ValueError, match="no time zone offset"):
        PredictionKey.from_payload({**base, "prediction_ts": "2026-11-27T17:00:00"})


def test_prediction_whose_event_was_lost_is_picked_up_by_the_next_run(alert_settings, crew):
    """A HIGH then a CRITICAL prediction whose events never arrived are handled, in order, by
    the next sweep; their late events then change nothing."""
    add_equipment(alert_settings, "GEN-0008")
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    high = write_prediction(alert_settings, "GEN-0008", 0.7, "HIGH", ts=t0)
    critical = write_prediction(
        alert_settings, "GEN-0008", 0.9, "CRITICAL", ts=t0 + timedelta(minutes=1)
    )
    outcomes = process_pending(alert_settings, crew)
    assert [o.action for o in outcomes] == ["opened", "escalated"]
    assert process_pending(alert_settings, crew) == []
    assert process_prediction(high, alert_settings, crew).action == "duplicate"
    assert process_prediction(critical, alert_settings, crew).action == "duplicate"
    assert _rows(alert_settings, "select count(*), max(severity) from ops.alerts") == [
        (1, "CRITICAL")
    ]
