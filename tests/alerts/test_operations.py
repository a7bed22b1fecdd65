"""Operations alerts: rules find the platform's own trouble, one open alert per rule and subject
mails the admins once (then at the re-notify interval), clears with its cause, shows in the
metrics, and reaches the mailbox from the 5-minute check flow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from emps.alerting import operations, outbox
from emps.alerting.mailbox import list_mailbox, read_mail
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.db import Role, connect
from emps.metrics import PlatformCollector
from emps.settings import Settings, get_settings

OPS = RecipientsConfig(
    people=(
        Recipient("Platform admins", "admin", ("*",), "ops@crews.example"),
        Recipient("Alpha techs", "technician", ("ALPHA",), "alpha@crews.example"),
    ),
)


def _claim(settings: Settings, name: str, age: timedelta) -> int:
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        return conn.execute(
            "insert into raw.ingest_files (file_name, sha256, size_bytes, received_at, claimed_at, "
            "claimed_by) values (%s, md5(%s), 10, now(), now() - %s, 'worker-1:4242') returning id",
            (name, name, age),
        ).fetchone()[0]


def _finished(settings: Settings, rows: int, quarantined: int, ago: timedelta) -> None:
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "insert into raw.ingest_files (file_name, sha256, size_bytes, received_at, status, "
            "finished_at, rows_total, rows_loaded, rows_quarantined) values "
            "('f.csv', md5(random()::text), 10, now(), 'partial', now() - %s, %s, %s, %s)",
            (ago, rows, rows - quarantined, quarantined),
        )


def _open(settings: Settings) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select rule, subject, notifications from ops.operations_alerts "
            "where status = 'open' order by id"
        ).fetchall()


def _metric(settings: Settings, rule: str) -> float:
    for family in PlatformCollector(settings).collect():
        if family.name == "emps_operations_alerts_open":
            return next(s.value for s in family.samples if s.labels == {"rule": rule})
    raise AssertionError("emps_operations_alerts_open missing")


def test_a_finding_mails_the_admins_once_reminds_them_and_clears_with_its_cause(
    alert_settings: Settings, mailbox
):
    """A claim older than the timeout opens one alert, mailed to the operations role only; the
    next looks refresh it without mail until the re-notify interval; fixed, it resolves."""
    handler, _ = mailbox
    stale = _claim(alert_settings, "dev-1/stuck.csv", timedelta(hours=2))
    rule = [operations.RULES["ingest_claim_stale"]]
    now = datetime.now(UTC)
    report = operations.evaluate(alert_settings, now=now, recipients=OPS, rules=rule)
    assert report.opened == [("ingest_claim_stale", "landing/processing")]
    assert outbox.send_notifications(alert_settings).sent == 1
    [mail] = list_mailbox(handler.directory)
    assert mail.to == "ops@crews.example"
    message = read_mail(mail.path)
    assert "Ingest claims older than the claim timeout" in message["Subject"]
    body = message.get_body(("plain",)).get_content()
    assert "dev-1/stuck.csv" in body and "every 24 hours" in body
    assert _metric(alert_settings, "ingest_claim_stale") == 1

    for later in (timedelta(minutes=5), timedelta(hours=23)):
        report = operations.evaluate(alert_settings, now=now + later, recipients=OPS, rules=rule)
        assert report.still_open and not report.opened and report.notifications == 0
    report = operations.evaluate(
        alert_settings, now=now + timedelta(hours=24, minutes=1), recipients=OPS, rules=rule
    )
    assert report.notifications == 1
    outbox.send_notifications(alert_settings)
    assert [m.to for m in list_mailbox(handler.directory)] == ["ops@crews.example"] * 2
    assert "Still open" in read_mail(list_mailbox(handler.directory)[-1].path)["Subject"]

    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute("update raw.ingest_files set status = 'loaded' where id = %s", (stale,))
    report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
    assert report.resolved == [("ingest_claim_stale", "landing/processing")]
    assert _open(alert_settings) == [] and _metric(alert_settings, "ingest_claim_stale") == 0


def test_quarantined_rows_alert_above_the_share_of_the_last_15_minutes(alert_settings: Settings):
    """More than EMPS_QUARANTINE_ALERT_SHARE of the last 15 minutes' rows quarantined opens the
    alert; at or under it, too few rows, or older files, do not."""
    rule = [operations.RULES["quarantine_share"]]

    def opened() -> list:
        return operations.evaluate(alert_settings, recipients=OPS, rules=rule).opened

    _finished(alert_settings, rows=100, quarantined=5, ago=timedelta(minutes=3))
    _finished(alert_settings, rows=100, quarantined=90, ago=timedelta(minutes=30))
    assert opened() == []  # 5 % now; the bad file is older than 15 minutes
    _finished(alert_settings, rows=10, quarantined=2, ago=timedelta(minutes=1))
    assert opened() == [("quarantine_share", "ingest")]  # 7 of 110
    [(_, _, _)] = _open(alert_settings)
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute("delete from raw.ingest_files")
    _finished(alert_settings, rows=10, quarantined=9, ago=timedelta(minutes=1))
    report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
    assert report.resolved  # 9 of 10, but fewer rows than EMPS_QUARANTINE_ALERT_MIN_ROWS


def test_a_failed_ingest_run_alerts_until_a_later_run_completes(
    alert_settings: Settings, prefect_server: str
):
    """The last finished ingest run failing opens the alert, naming the run and its error; a
    later run completing resolves it."""
    from prefect import flow

    @flow(name=operations.INGEST_FLOW)
    def ingest_stand_in(fail: bool) -> None:
        if fail:
            raise RuntimeError("database unreachable for 10 minutes")

    rule = [operations.RULES["ingest_run_failed"]]
    ingest_stand_in(fail=True, return_state=True)
    report = operations.evaluate(
        alert_settings, recipients=OPS, rules=rule, prefect_api=prefect_server
    )
    assert report.opened == [("ingest_run_failed", operations.INGEST_FLOW)]
    with connect(Role.OWNER, alert_settings) as conn:
        summary, details = conn.execute(
            "select summary, details from ops.operations_alerts"
        ).fetchone()
    assert "Failed" in summary and "database unreachable" in details["message"]
    ingest_stand_in(fail=False)
    report = operations.evaluate(
        alert_settings, recipients=OPS, rules=rule, prefect_api=prefect_server
    )
    assert report.resolved == [("ingest_run_failed", operations.INGEST_FLOW)]


def test_notifications_stuck_in_the_outbox_alert_until_they_go_out(alert_settings: Settings):
    """A notification due for longer than EMPS_NOTIFY_PENDING_ALERT_S opens an alert naming how
    many wait and the last error; once it is delivered the alert resolves."""
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        [waiting_id] = conn.execute(
            "insert into ops.notifications (channel, recipient, subject, body_text, dedupe_key,"
            " event, status, attempts, last_error, due_at) values ('email', 'x@crews.example',"
            " 's', 't', 'stuck-1', 'test', 'failed', 3, 'connection refused', %s) returning id",
            (datetime.now(UTC) - timedelta(hours=2),),
        ).fetchone()
    rule = [operations.RULES["notifications_backlog"]]
    now = datetime.now(UTC)
    fresh = alert_settings.replace(notifications={"pending_alert_s": 3 * 3600.0})
    assert operations.evaluate(fresh, now=now, recipients=OPS, rules=rule).opened == []
    report = operations.evaluate(alert_settings, now=now, recipients=OPS, rules=rule)
    assert report.opened == [("notifications_backlog", "notifications")]
    with connect(Role.OWNER, alert_settings) as conn:
        [summary] = conn.execute(
            "select summary from ops.operations_alerts where rule = 'notifications_backlog'"
        ).fetchone()
    assert "1 notifications waiting" in summary and "connection refused" in summary
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute(
            "update ops.notifications set status = 'sent', sent_at = now() where id = %s",
            (waiting_id,),
        )
    report = operations.evaluate(alert_settings, now=now, recipients=OPS, rules=rule)
    assert report.resolved == [("notifications_backlog", "notifications")]


def test_a_broken_rule_neither_stops_the_others_nor_clears_its_alerts(alert_settings: Settings):
    """A rule that fails is reported, its open alert stays open, and the other rules still run."""
    calls = []

    def flaky(ctx: operations.RuleContext) -> list[operations.Finding]:
        calls.append(ctx.now)
        if len(calls) > 1:
            raise ConnectionError("the thing it looks at is down")
        return [operations.Finding("there", "something is wrong")]

    broken = operations.Rule("flaky", "A flaky check", flaky)
    stale = operations.RULES["ingest_claim_stale"]
    _claim(alert_settings, "stuck.csv", timedelta(hours=2))
    operations.evaluate(alert_settings, recipients=OPS, rules=[broken])
    report = operations.evaluate(alert_settings, recipients=OPS, rules=[broken, stale])
    assert "ConnectionError: the thing it looks at is down" in report.failed["flaky"]
    assert report.opened == [("ingest_claim_stale", "landing/processing")]
    assert [row[:2] for row in _open(alert_settings)] == [
        ("flaky", "there"),
        ("ingest_claim_stale", "landing/processing"),
    ]


def test_every_rule_has_a_metric_and_a_docstring():
    """Each registered rule is named in the metrics (0 while quiet) and says what it finds."""
    names = [rule.name for rule in operations.registered_rules()]
    assert {"ingest_run_failed", "ingest_claim_stale", "quarantine_share"} <= set(names)
    for rule in operations.registered_rules():
        assert rule.check.__doc__ and rule.title


@pytest.fixture
def ops_env(alert_settings: Settings, mailbox, tmp_path, monkeypatch):
    """EMPS_* variables so the check flow mails this test's sink and its admins."""
    _, port = mailbox
    crew = tmp_path / "recipients.yaml"
    crew.write_text(
        yaml.safe_dump(
            {
                "operations": ["admin"],
                "people": [{"name": "Ops", "role": "admin", "email": "ops@crews.example"}],
            }
        )
    )
    monkeypatch.setenv("EMPS_SMTP_PORT", str(port))
    monkeypatch.setenv("EMPS_RECIPIENTS_PATH", str(crew))
    monkeypatch.setenv("EMPS_HOME", str(tmp_path))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_the_five_minute_check_mails_the_admins(ops_env: Settings, mailbox, prefect_server):
    """check-critical-alerts evaluates the operations rules and delivers their mail."""
    from emps.flows.alerts import check_critical_alerts

    handler, _ = mailbox
    _claim(ops_env, "stuck.csv", timedelta(hours=1))
    result = check_critical_alerts()
    opened = result["operations"]["opened"]
    assert ("ingest_claim_stale", "landing/processing") in opened
    mails = list_mailbox(handler.directory)
    assert len(mails) == len(opened) and {m.to for m in mails} == {"ops@crews.example"}
    assert any("Ingest claims" in read_mail(m.path)["Subject"] for m in mails)
    assert check_critical_alerts()["operations"]["opened"] == []
    assert len(list_mailbox(handler.directory)) == len(opened)


def test_rows_in_a_default_partition_alert_until_their_month_has_a_partition(
    alert_settings: Settings,
):
    """Readings of a month with no partition (here January 2001) sit in the DEFAULT partition:
    the rule reports how many and when, and resolves once the month's partition took them."""
    rule = [operations.RULES["default_partition_rows"]]
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site)"
            " values ('GEN-0401', 'generator', 'ALPHA')"
        )
        conn.execute(
            "insert into raw.sensor_readings (equipment_id, ts) values"
            " ('GEN-0401', '2001-01-15 10:00+00'), ('GEN-0401', '2001-01-15 10:01+00')"
        )
    report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
    assert report.opened == [("default_partition_rows", "raw.sensor_readings")]
    with connect(Role.OWNER, alert_settings) as conn:
        summary = conn.execute(
            "select summary from ops.operations_alerts where rule = 'default_partition_rows'"
        ).fetchone()[0]
    assert (
        summary == "2 rows in the DEFAULT partition, from 2001-01-15 10:00 to 2001-01-15 10:01 UTC"
    )
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute(
            "select ops.ensure_month_partitions('raw.sensor_readings'::regclass,"
            " '2001-01-01+00', '2001-01-31+00')"
        )
        report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
        assert report.resolved == [("default_partition_rows", "raw.sensor_readings")]
        conn.execute("drop table raw.sensor_readings_y2001m01")  # keep the session database tidy


def test_a_service_emps_up_gave_up_on_alerts_until_it_runs_again(alert_settings: Settings):
    """A service the supervisor stopped restarting (it kept crashing) is an operations alert
    naming it and its log; it resolves once a new `emps up` runs it."""
    import json

    rule = [operations.RULES["service_given_up"]]
    state = alert_settings.run_dir / "services.json"
    state.parent.mkdir(parents=True, exist_ok=True)

    def write(given_up: bool) -> None:
        service = {"name": "mlflow", "restarts": 5, "given_up": given_up, "log": "mlflow.log"}
        state.write_text(json.dumps({"services": [service]}))

    write(given_up=True)
    report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
    assert report.opened == [("service_given_up", "mlflow")]
    write(given_up=False)
    report = operations.evaluate(alert_settings, recipients=OPS, rules=rule)
    assert report.resolved == [("service_given_up", "mlflow")]


def test_low_disk_warns_then_is_critical_and_the_metric_shows_it(alert_settings: Settings):
    """Free disk under EMPS_DISK_WARN_FREE_MB opens a warning; under EMPS_DISK_CRITICAL_FREE_MB
    the warning resolves and a critical alert opens (mailed again); Prometheus shows the free
    bytes."""
    rule = [operations.RULES["disk_low"]]
    huge = 1 << 40  # MB: more than any disk has free
    low = alert_settings.replace(operations={"disk_warn_free_mb": huge, "disk_critical_free_mb": 0})
    assert operations.evaluate(low, recipients=OPS, rules=rule).opened == [("disk_low", "warning")]
    lower = low.replace(operations={"disk_critical_free_mb": huge})
    report = operations.evaluate(lower, recipients=OPS, rules=rule)
    assert report.opened == [("disk_low", "critical")]
    assert report.resolved == [("disk_low", "warning")]
    assert report.notifications == 1
    families = {f.name: f for f in PlatformCollector(alert_settings).collect()}
    assert families["emps_disk_free_bytes"].samples[0].value > 0
