"""The alert flows on a real Prefect server: the event-triggered deployment, the scheduled flows."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from alert_testdata import add_equipment, write_prediction

from emps.alerting.mailbox import list_mailbox, read_mail
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT, get_settings

CREW = {
    "escalation": ["technician", "supervisor"],
    "daily_report": ["supervisor"],
    "people": [
        {"name": "A", "role": "technician", "sites": ["ALPHA"], "email": "a@crews.example"},
        {"name": "B", "role": "technician", "sites": ["ALPHA"], "email": "b@crews.example"},
        {"name": "Boss", "role": "supervisor", "sites": ["*"], "email": "boss@crews.example"},
    ],
}


def wait_for(condition, what: str, timeout: float = 180.0):
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def flow_env(alert_settings, mailbox, tmp_path, monkeypatch):
    """EMPS_* variables so flows (in this process or a runner's subprocess) use the test SMTP sink
    and crew; the process-wide settings are rebuilt from them for the test."""
    _, port = mailbox
    crew = tmp_path / "recipients.yaml"
    crew.write_text(yaml.safe_dump(CREW))
    monkeypatch.setenv("EMPS_SMTP_PORT", str(port))
    monkeypatch.setenv("EMPS_RECIPIENTS_PATH", str(crew))
    monkeypatch.setenv("EMPS_NOTIFY_BACKOFF_S", "0")
    monkeypatch.setenv("EMPS_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def _count(settings, sql):
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(sql).fetchone()[0]


def test_prediction_event_twice_gives_one_alert_one_task_one_mail_each(
    flow_env, mailbox, prefect_server
):
    """The served deployment, triggered twice by the same prediction's events, opens one alert
    and one corrective task, and each technician gets exactly one email."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.events import emit_event

    handler, _ = mailbox
    add_equipment(flow_env, "GEN-0201")
    payload = write_prediction(flow_env, "GEN-0201", 0.91, "CRITICAL")
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "emps.flows.serving"], env=env, cwd=PROJECT_ROOT
    )
    try:

        async def automation_ready():
            async with get_client() as client:
                automations = await client.read_automations()
            return any(a.name.startswith("process-prediction-alerts") for a in automations)

        wait_for(lambda: asyncio.run(automation_ready()), "the deployment's trigger")
        for _ in range(2):
            emit_event(  # as a scoring run emits a prediction whose alert it did not raise
                event="emps.prediction.critical",
                resource={
                    "prefect.resource.id": "equipment.GEN-0201",
                    "emps.alert-handled": "false",
                },
                payload=payload,
            )

        async def finished_runs():  # of this flow: the session's server has other tests' runs
            async with get_client() as client:
                runs = await client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["process-prediction-alerts"]))
                )
            return [
                r
                for r in runs
                if r.state and r.state.is_final() and r.name and r.flow_id and r.deployment_id
            ]

        runs = wait_for(
            lambda: len(asyncio.run(finished_runs())) >= 2 and asyncio.run(finished_runs()),
            "two triggered flow runs to finish",
        )
        assert all(r.state.is_completed() for r in runs), [r.state for r in runs]
    finally:
        # The runner's own shutdown is not what this test checks: a slow one must not fail it.
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(timeout=60)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.wait()
    assert _count(flow_env, "select count(*) from ops.alerts") == 1
    assert (
        _count(
            flow_env, "select count(*) from ops.maintenance_tasks where task_type = 'corrective'"
        )
        == 1
    )
    assert sorted(m.to for m in list_mailbox(handler.directory)) == [
        "a@crews.example",
        "b@crews.example",
    ]


def test_check_critical_alerts_flow_escalates_to_the_supervisor(flow_env, mailbox, prefect_server):
    """An unacknowledged CRITICAL alert older than the delay reaches the supervisor's mailbox."""
    from emps.flows.alerts import check_critical_alerts, process_prediction_alerts

    handler, _ = mailbox
    add_equipment(flow_env, "GEN-0202")
    payload = write_prediction(flow_env, "GEN-0202", 0.9, "CRITICAL")
    process_prediction_alerts(payload)
    with connect(Role.OWNER, flow_env) as conn:
        conn.execute("update ops.alerts set last_notified_at = now() - interval '1 day'")
    result = check_critical_alerts()
    assert len(result["escalated"]) == 1
    boss = [m for m in list_mailbox(handler.directory) if m.to == "boss@crews.example"]
    assert len(boss) == 1
    assert "still unacknowledged" in read_mail(boss[0].path).get_body(("plain",)).get_content()


def test_daily_report_mail_has_pdf_and_csv_and_is_sent_once_a_day(
    dashboard_marts, flow_env, mailbox, prefect_server
):
    """The 08:00 report reaches the supervisor with the fleet PDF and CSVs; a second run the
    same day sends nothing more."""
    from emps.flows.alerts import process_prediction_alerts, send_daily_maintenance_report

    handler, _ = mailbox
    add_equipment(flow_env, "GEN-0203")
    process_prediction_alerts(write_prediction(flow_env, "GEN-0203", 0.9, "CRITICAL", days=0.5))
    first = send_daily_maintenance_report()
    second = send_daily_maintenance_report()
    assert (first["queued"], second["queued"]) == (1, 0)
    reports = [m for m in list_mailbox(handler.directory) if m.to == "boss@crews.example"]
    assert len(reports) == 1
    msg = read_mail(reports[0].path)
    names = sorted(part.get_filename() for part in msg.iter_attachments())
    assert any(n.endswith(".pdf") for n in names), names
    assert sum(n.endswith(".csv") for n in names) == 2, names
    text = msg.get_body(("plain",)).get_content()
    assert "GEN-0203" in text and "corrective" in text
    assert Path(first["files"][0]).exists()


def test_smtp_password_from_a_prefect_secret_block(
    alert_settings, crew, auth_mailbox, ca_file, prefect_server
):
    """With no EMPS_SMTP_PASSWORD, the password comes from the named Prefect Secret block."""
    from prefect.blocks.system import Secret

    from emps.alerting.outbox import send_notifications
    from emps.alerting.rules import process_prediction

    handler, port = auth_mailbox
    Secret(value="right").save("emps-smtp-password-test", overwrite=True)
    add_equipment(alert_settings, "GEN-0204")
    process_prediction(
        write_prediction(alert_settings, "GEN-0204", 0.9, "CRITICAL"), alert_settings, crew
    )
    settings = alert_settings.replace(
        notifications={
            "smtp_port": port,
            "smtp_username": "emps",
            "smtp_password_block": "emps-smtp-password-test",
            "ca_file": ca_file,
        }
    )
    assert send_notifications(settings).sent == 2
    assert handler.stored == 2


def test_send_notifications_run_fails_and_logs_while_a_notification_waits_too_long(
    flow_env, mailbox, prefect_server, caplog
):
    """A notification stuck retrying for longer than EMPS_NOTIFY_PENDING_ALERT_S fails the
    every-minute send-notifications run with its age, and logs the last error: an outage of the
    mail is seen in the Prefect UI and the logs, not only by mail."""
    from emps.flows.alerts import send_notifications

    with connect(Role.OWNER, flow_env) as conn:
        conn.execute(
            "insert into ops.notifications (channel, recipient, body_text, dedupe_key, status,"
            " attempts, last_error, due_at, next_attempt_at) values ('email',"
            " 'full@crews.example', 't', 'stuck', 'failed', 3, '452 mailbox full',"
            " now() - interval '25 minutes', now() + interval '5 minutes')"
        )
    with pytest.raises(RuntimeError, match="waited 25 min"):
        send_notifications()
    assert "452 mailbox full" in caplog.text
    assert "notifications are not going out" in caplog.text


def scored_frame(settings, equipment_id: str, probability: float, severity: str):
    """A prediction written as the scoring run writes it, as the run holds it (its frame)."""
    import pandas as pd

    payload = write_prediction(settings, equipment_id, probability, severity)
    row = {**payload, "id": payload["prediction_id"], "ts": pd.Timestamp(payload["prediction_ts"])}
    return pd.DataFrame([row]), payload


def raise_in_a_scoring_run(changed) -> dict:
    """The scoring flow's raise-alerts task, run inside a flow as scoring runs it."""
    from prefect import flow

    from emps.flows.score import raise_alerts

    return flow(name="scoring-run")(lambda: raise_alerts(changed))()


def test_a_scoring_run_raises_and_mails_its_own_alerts(flow_env, mailbox, prefect_server):
    """A prediction that turns CRITICAL is alerted and mailed by the scoring run itself, not
    seconds later by the alert flow its event starts; that flow then finds it handled and sends
    nothing more."""
    from emps.flows.alerts import process_prediction_alerts

    handler, _ = mailbox
    add_equipment(flow_env, "GEN-0301")
    changed, payload = scored_frame(flow_env, "GEN-0301", 0.93, "CRITICAL")
    summary = raise_in_a_scoring_run(changed)
    assert summary["sent"] == 2 and len(summary["alerts"]) == 1
    assert sorted(m.to for m in list_mailbox(handler.directory)) == [
        "a@crews.example",
        "b@crews.example",
    ]
    triggered = process_prediction_alerts(payload)
    assert triggered["action"] == "duplicate" and triggered["alert_id"] == summary["alerts"][0]
    assert len(list_mailbox(handler.directory)) == 2
    assert _count(flow_env, "select count(*) from ops.alerts") == 1


def test_a_scoring_run_leaves_mail_to_the_outbox_while_retries_wait(
    flow_env, mailbox, prefect_server, caplog
):
    """While a notification waits for its retry (the mail server was down), a scoring run still
    opens its alerts but does not send: ingest must not wait on a mail timeout. The every-minute
    send-notifications flow delivers them."""
    from emps.flows.alerts import send_notifications

    handler, _ = mailbox
    with connect(Role.OWNER, flow_env) as conn:
        conn.execute(
            "insert into ops.notifications (channel, recipient, body_text, dedupe_key, status,"
            " attempts, last_error, due_at, next_attempt_at) values ('email',"
            " 'c@crews.example', 't', 'retrying', 'failed', 1, 'connection refused',"
            " now() - interval '1 minute', now() - interval '1 second')"
        )
    add_equipment(flow_env, "GEN-0302")
    changed, _ = scored_frame(flow_env, "GEN-0302", 0.72, "HIGH")
    summary = raise_in_a_scoring_run(changed)
    assert summary["sent"] == 0 and len(summary["alerts"]) == 1
    assert "notifications wait for send-notifications" in caplog.text
    assert list_mailbox(handler.directory) == []
    assert send_notifications()["sent"] == 3
    assert sorted(m.to for m in list_mailbox(handler.directory)) == [
        "a@crews.example",
        "b@crews.example",
        "c@crews.example",
    ]
