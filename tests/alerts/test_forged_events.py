"""Prediction events are keys, not facts: whatever an event claims, the alert flow acts on the
prediction stored in ops.predictions, so a forged event raises no alert."""

from __future__ import annotations

from alert_testdata import add_equipment, write_prediction

from emps.alerting.rules import process_prediction
from emps.db import Role, connect


def _alerts(settings) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select equipment_id, severity, coalesce(failure_mode, '') from ops.alerts order by id"
        ).fetchall()


def _notifications(settings) -> int:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute("select count(*) from ops.notifications").fetchone()[0]


def test_an_event_claiming_critical_for_a_low_prediction_raises_nothing(alert_settings, crew):
    """An event naming a real LOW prediction but claiming CRITICAL, another machine and a high
    probability opens no alert and mails nobody."""
    add_equipment(alert_settings, "GEN-0401")
    add_equipment(alert_settings, "GEN-0402")
    payload = write_prediction(alert_settings, "GEN-0401", 0.05, "LOW")
    forged = {
        **payload,
        "equipment_id": "GEN-0402",
        "severity": "CRITICAL",
        "failure_probability": 0.99,
        "days_until_failure": 0.1,
    }
    assert process_prediction(forged, alert_settings, crew).action == "ignored"
    assert _alerts(alert_settings) == [] and _notifications(alert_settings) == 0


def test_an_event_for_no_stored_prediction_raises_nothing(alert_settings, crew):
    """An event whose prediction id does not exist is ignored, however alarming it reads."""
    add_equipment(alert_settings, "GEN-0403")
    payload = write_prediction(alert_settings, "GEN-0403", 0.9, "CRITICAL")
    forged = {**payload, "prediction_id": payload["prediction_id"] + 999}
    assert process_prediction(forged, alert_settings, crew).action == "unknown"
    assert _alerts(alert_settings) == []


def test_a_high_prediction_stays_high_whatever_its_events_say(alert_settings, crew):
    """Events naming one HIGH prediction but claiming CRITICAL and a new failure mode each time
    open one HIGH alert for the stored machine: no escalation, no alert per failure mode."""
    add_equipment(alert_settings, "GEN-0404")
    payload = write_prediction(alert_settings, "GEN-0404", 0.7, "HIGH")
    outcomes = [
        process_prediction(
            {**payload, "severity": "CRITICAL", "failure_mode": f"mode-{i}"}, alert_settings, crew
        ).action
        for i in range(3)
    ]
    assert outcomes == ["opened", "duplicate", "duplicate"]
    assert _alerts(alert_settings) == [("GEN-0404", "HIGH", "")]


def test_the_flow_acts_on_the_stored_prediction(alert_settings, crew, prefect_server, monkeypatch):
    """The process-prediction-alerts flow, given a forged payload as its trigger would pass it,
    raises nothing."""
    from emps.flows.alerts import process_prediction_alerts
    from emps.settings import get_settings

    add_equipment(alert_settings, "GEN-0405")
    payload = write_prediction(alert_settings, "GEN-0405", 0.1, "LOW")
    monkeypatch.setenv("EMPS_RECIPIENTS_PATH", str(alert_settings.notifications.recipients_path))
    get_settings.cache_clear()
    try:
        result = process_prediction_alerts({**payload, "severity": "CRITICAL"}, "forged-1")
    finally:
        get_settings.cache_clear()
    assert result["action"] == "ignored"
    assert _alerts(alert_settings) == []
