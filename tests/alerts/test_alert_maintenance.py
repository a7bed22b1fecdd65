"""Retention, quiet hours, recipients config and the alert / task / mail commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alert_testdata import add_equipment, write_prediction
from typer.testing import CliRunner

from emps.alerting import archive
from emps.alerting.recipients import deliver_after, load_recipients
from emps.alerting.retention import cleanup
from emps.alerting.rules import process_prediction
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT, get_settings


def test_retention_archives_old_resolved_alerts_keeps_tasks_and_retires_old_partitions(
    alert_settings, crew
):
    """Resolved alerts past 90 days leave the table for an archive file with their
    notifications (their task stays, unlinked; a summary stays); open ones, and resolved ones
    whose mail still waits, stay; month partitions older than two years are detached."""
    add_equipment(alert_settings, "GEN-0301")
    add_equipment(alert_settings, "GEN-0302", "BRAVO")
    add_equipment(alert_settings, "GEN-0303")
    old = process_prediction(
        write_prediction(alert_settings, "GEN-0301", 0.9, "CRITICAL"), alert_settings, crew
    )
    kept = process_prediction(
        write_prediction(alert_settings, "GEN-0302", 0.9, "CRITICAL"), alert_settings, crew
    )
    waiting = process_prediction(
        write_prediction(alert_settings, "GEN-0303", 0.9, "CRITICAL"), alert_settings, crew
    )
    now = datetime.now(UTC)
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        for alert in (old, waiting):
            conn.execute("select ops.resolve_alert(%s, 'tech')", (alert.alert_id,))
        conn.execute(
            "update ops.alerts set resolved_at = now() - interval '91 days' where id = any(%s)",
            ([old.alert_id, waiting.alert_id],),
        )
        conn.execute(
            "update ops.notifications set status = 'sent', sent_at = now() where alert_id = %s",
            (old.alert_id,),
        )
        notified = conn.execute(
            "select count(*) from ops.notifications where alert_id = %s", (old.alert_id,)
        ).fetchone()[0]
        conn.execute(
            "select ops.ensure_month_partitions('raw.sensor_readings'::regclass, %s, %s)",
            (now - timedelta(days=800), now - timedelta(days=760)),
        )
    report = cleanup(alert_settings, now=now)
    assert report.archived["alerts"] == 1
    assert report.mode == "detach"
    assert report.partitions_retired, "the 800-day-old month should be retired"
    files = list((alert_settings.records_dir / "alerts").rglob("*.jsonl.gz"))
    assert len(files) == 1
    (record,) = archive.read(files[0])
    assert record["id"] == old.alert_id and record["status"] == "resolved"
    assert len(record["notifications"]) == notified > 0
    with connect(Role.OWNER, alert_settings) as conn:
        alerts = sorted(r[0] for r in conn.execute("select id from ops.alerts").fetchall())
        assert alerts == sorted([kept.alert_id, waiting.alert_id])
        summary = conn.execute(
            "select equipment_id, severity from ops.archived_alerts where id = %s", (old.alert_id,)
        ).fetchone()
        assert summary == ("GEN-0301", "CRITICAL")
        task_alert = conn.execute(
            "select alert_id from ops.maintenance_tasks where id = %s", (old.task_id,)
        ).fetchone()
        assert task_alert == (None,)
        attached = {
            r[0]
            for r in conn.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = 'raw.sensor_readings'::regclass"
            ).fetchall()
        }
        for name in report.partitions_retired:
            table = name.split(".")[1]
            assert table not in attached
            assert conn.execute("select to_regclass(%s)", (name,)).fetchone()[0] is not None
            conn.execute(f"drop table {name}")  # keep the session database tidy


def test_quiet_hours_delay_high_but_never_critical(alert_settings):
    """During quiet hours a HIGH notification waits for the morning; a CRITICAL one goes now."""
    settings = alert_settings.replace(
        timezone="Europe/Paris", notifications={"quiet_hours": "22:00-06:00"}
    )
    night = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)  # 00:30 in Paris
    assert deliver_after("CRITICAL", night, settings) == night
    assert deliver_after("HIGH", night, settings) == datetime(2026, 1, 16, 5, 0, tzinfo=UTC)
    noon = datetime(2026, 1, 16, 11, 0, tzinfo=UTC)
    assert deliver_after("HIGH", noon, settings) == noon


def test_recipients_file_errors_name_the_person_and_field(tmp_path, settings):
    """A crew entry asking for SMS without a phone number is reported by name."""
    path = tmp_path / "crew.yaml"
    path.write_text("people:\n  - name: Night shift\n    role: technician\n    channels: [sms]\n")
    with pytest.raises(ValueError, match=r"crew.yaml: person 1 \(Night shift\).*'phone'"):
        load_recipients(path, settings)
    committed = load_recipients(PROJECT_ROOT / "config" / "recipients.yaml", settings)
    assert committed.for_alert("ALPHA", 0)[0].email == "alpha-techs@crews.example"


@pytest.fixture
def cli_env(alert_settings, mailbox, tmp_path, monkeypatch):
    _, port = mailbox
    monkeypatch.setenv("EMPS_SMTP_PORT", str(port))
    monkeypatch.setenv("EMPS_HOME", str(tmp_path))
    monkeypatch.setenv("EMPS_NOTIFY_BACKOFF_S", "0")
    from emps.commands import alerts as alert_commands

    # Wide enough that table cells are not wrapped mid-word.
    monkeypatch.setattr(alert_commands.console, "width", 250)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def test_cli_acknowledge_complete_and_mail_list(dashboard_marts, cli_env, crew, mailbox):
    """From the shell: list an alert, acknowledge it (twice is refused clearly), complete its
    task with an outcome, see the notifications waiting, send the outbox and see the mails in
    the local mailbox."""
    from emps.cli import app

    add_equipment(cli_env, "GEN-0303")
    outcome = process_prediction(
        write_prediction(cli_env, "GEN-0303", 0.9, "CRITICAL"), cli_env, crew
    )
    runner = CliRunner()
    listed = runner.invoke(app, ["alerts", "list"])
    assert listed.exit_code == 0, listed.output
    assert "GEN-0303" in listed.output
    ack = runner.invoke(app, ["alerts", "ack", str(outcome.alert_id), "--by", "tech.jones"])
    assert ack.exit_code == 0, ack.output
    again = runner.invoke(app, ["alerts", "ack", str(outcome.alert_id), "--by", "tech.jones"])
    assert again.exit_code == 1
    assert "already acknowledged" in again.output
    bad = runner.invoke(app, ["tasks", "complete", str(outcome.task_id), "--outcome", "fixed"])
    assert bad.exit_code == 1 and "is not one of fault_found" in bad.output
    done = runner.invoke(
        app, ["tasks", "complete", str(outcome.task_id), "--outcome", "fault_found"]
    )
    assert done.exit_code == 0, done.output
    status = runner.invoke(app, ["notify", "status"])
    assert status.exit_code == 0 and "2 notifications waiting to be sent" in status.output
    sent = runner.invoke(app, ["notify", "send"])
    assert sent.exit_code == 0 and "2 sent" in sent.output, sent.output
    # The sink stores into <tmp>/mailbox, which is <EMPS_HOME>/mailbox for `emps mail list`.
    shown = runner.invoke(app, ["mail", "list"])
    assert shown.exit_code == 0
    assert "2 messages" in shown.output
    assert shown.output.count("GEN-0303") == 2


def test_the_daily_cleanup_creates_the_months_ahead_of_its_clock(alert_settings):
    """A platform up for longer than the months `emps db migrate` created keeps writing into
    month partitions: the daily cleanup creates EMPS_PARTITIONS_MONTHS_AHEAD months ahead of its
    clock (here four months on), and a reading of that far month lands in its own partition."""
    later = datetime.now(UTC) + timedelta(days=120)
    ahead = later + timedelta(days=31 * alert_settings.database.partitions_months_ahead - 1)
    name = f"sensor_readings_y{ahead:%Y}m{ahead:%m}"
    with connect(Role.OWNER, alert_settings) as conn:
        assert conn.execute("select to_regclass(%s)", (f"raw.{name}",)).fetchone()[0] is None
    report = cleanup(alert_settings, now=later)
    assert report.partitions_created >= 2  # readings and predictions, the new months of each
    add_equipment(alert_settings, "GEN-0303")
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        conn.execute(
            "insert into raw.sensor_readings (equipment_id, ts) values (%s, %s)",
            ("GEN-0303", ahead),
        )
        where = conn.execute(
            "select tableoid::regclass::text from raw.sensor_readings where equipment_id = %s",
            ("GEN-0303",),
        ).fetchone()[0]
        assert where == f"raw.{name}"
        assert cleanup(alert_settings, now=later).partitions_created == 0  # already there


def test_the_daily_cleanup_deletes_old_drop_files_reports_and_mail(alert_settings):
    """Drop files archived as received, daily report files and the local sink's mail older
    than their retention go; younger ones, quarantined files and the readings stay."""
    import os

    now = datetime.now(UTC)
    old, young = now - timedelta(days=40), now - timedelta(days=2)
    archive = alert_settings.landing_dir / "archive"
    for day in (old, young):
        folder = archive / f"{day:%Y/%m/%d}"
        folder.mkdir(parents=True)
        (folder / "gen.csv").write_text("equipment_id,ts\n")
    quarantined = alert_settings.landing_dir / "quarantine" / "bad.csv"
    quarantined.parent.mkdir(parents=True)
    quarantined.write_text("?")
    os.utime(quarantined, (old.timestamp(), old.timestamp()))
    reports = alert_settings.reports_dir / "daily"
    for day in (now - timedelta(days=100), young):
        (reports / f"{day:%Y-%m-%d}").mkdir(parents=True)
        (reports / f"{day:%Y-%m-%d}" / "tasks.csv").write_text("id\n")
    mailbox = alert_settings.home / "mailbox"  # the test's SMTP sink keeps its mail here
    mailbox.mkdir(exist_ok=True)
    for name, when in (("old.eml", old), ("new.eml", young)):
        (mailbox / name).write_text("Subject: x\n\n")
        os.utime(mailbox / name, (when.timestamp(), when.timestamp()))
    report = cleanup(alert_settings, now=now)
    assert report.files_deleted == {"archive": 1, "reports": 1, "mailbox": 1}
    assert [p.relative_to(archive).as_posix() for p in archive.rglob("*.csv")] == [
        f"{young:%Y/%m/%d}/gen.csv"
    ]
    assert not (archive / f"{old:%Y/%m/%d}").exists()
    assert [p.name for p in reports.iterdir()] == [f"{young:%Y-%m-%d}"]
    assert [p.name for p in mailbox.iterdir()] == ["new.eml"]
    assert quarantined.exists()
