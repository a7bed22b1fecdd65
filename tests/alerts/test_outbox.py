"""The outbox's promise, against real aiosmtpd servers and the test PostgreSQL: each
notification delivered once through slow servers, bad rows and long outages, never in clear text
by accident, and the age of the oldest waiting one visible to operators."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from alert_testdata import add_equipment, write_prediction
from psycopg.rows import dict_row
from pydantic import SecretStr, ValidationError

from emps.alerting.backlog import backlog, oldest_pending_age_s
from emps.alerting.email import DeliveryError
from emps.alerting.mailbox import MailboxHandler, list_mailbox, read_mail
from emps.alerting.outbox import (
    AttachmentError,
    SendReport,
    claim_due,
    enqueue_email,
    send_notifications,
)
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.alerting.rules import process_prediction
from emps.db import Role, connect
from emps.flows.serving import deployment_spec
from emps.processes import free_port
from emps.settings import NotificationSettings, Settings
from emps.supervisor import mail_and_metrics


def _queue(settings: Settings, count: int, attachments: dict[int, list[Path]] | None = None):
    """`count` emails to distinct crews, as the daily report queues them; returns their keys."""
    keys = [f"test/{i:03d}" for i in range(count)]
    with connect(Role.ALERTING, settings) as conn, conn.transaction():
        for i, key in enumerate(keys):
            enqueue_email(
                conn,
                to=f"crew{i}@crews.example",
                subject=f"notice {i}",
                text=f"body {i}",
                html=None,
                key=key,
                event="test",
                attachments=(attachments or {}).get(i, []),
                settings=settings,
            )
    return keys


def _rows(settings: Settings) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select dedupe_key, status, attempts, last_error, sent_at"
            " from ops.notifications order by id"
        ).fetchall()


def _statuses(settings: Settings) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in _rows(settings):
        counts[row[1]] = counts.get(row[1], 0) + 1
    return counts


def _open_alert(settings: Settings, crew: RecipientsConfig, equipment_id: str) -> None:
    add_equipment(settings, equipment_id)
    process_prediction(write_prediction(settings, equipment_id, 0.92, "CRITICAL"), settings, crew)


class _SlowMailbox(MailboxHandler):
    """A server that takes `delay` seconds to answer each message."""

    def __init__(self, directory: Path, delay: float):
        super().__init__(directory)
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_two_senders_and_a_server_taking_5_s_per_message_deliver_each_once(alert_settings):
    """With a server answering each message in 5 s, a batch outlasts its sender's lease; a
    second sender polling all along takes none of it over, and the server receives every
    Message-ID exactly once."""
    handler = _SlowMailbox(alert_settings.home / "slow", delay=5.0)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    # A 12 s lease (the least a 6 s send allows) against three 5 s messages: the batch needs
    # 15 s, so without renewal the third message is taken over while it is being sent.
    settings = alert_settings.replace(
        notifications={"smtp_port": port, "smtp_timeout_s": 6.0, "lease_s": 12.0}
    )
    _queue(settings, 3)
    failures: list[BaseException] = []

    def sender(name: str, start_after: float) -> None:
        time.sleep(start_after)
        deadline = time.monotonic() + 60
        try:
            while _statuses(settings) != {"sent": 3} and time.monotonic() < deadline:
                send_notifications(settings, worker=name)
                time.sleep(0.25)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [
        threading.Thread(target=sender, args=("sender-a", 0.0)),
        threading.Thread(target=sender, args=("sender-b", 0.5)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        controller.stop()
    assert not failures, failures
    assert _statuses(settings) == {"sent": 3}
    received = {
        m.message_id: handler.received[m.message_id] for m in list_mailbox(handler.directory)
    }
    assert len(received) == 3
    assert set(received.values()) == {1}, received
    assert handler.accepted == 3


def test_a_row_whose_attachment_is_missing_ends_dead_and_the_other_49_are_delivered(
    alert_settings, mailbox
):
    """One email of a batch of 50 names a report file deleted before sending: it ends dead with
    the reason, and the other 49 of its batch reach the mailbox once each."""
    handler, _ = mailbox
    report = alert_settings.reports_dir / "daily" / "2026-01-01" / "fleet.pdf"
    report.parent.mkdir(parents=True)
    report.write_bytes(b"%PDF-1.4 fleet")
    keys = _queue(alert_settings, 50, attachments={17: [report]})
    report.unlink()

    result = send_notifications(alert_settings)

    assert (result.claimed, result.sent, result.dead) == (50, 49, 1)
    rows = {row[0]: row for row in _rows(alert_settings)}
    poisoned = rows[keys[17]]
    assert poisoned[1] == "dead"
    assert "fleet.pdf is missing" in poisoned[3]
    assert all(rows[k][1] == "sent" for k in keys if k != keys[17])
    assert handler.stored == 49 and set(handler.received.values()) == {1}
    assert any("fleet.pdf is missing" in e for e in result.errors)


def test_attachments_come_only_from_the_reports_folder(alert_settings, mailbox, tmp_path):
    """A row naming a file outside the reports folder, or reaching it through a symbolic link,
    ends dead and nothing of the file is mailed; a report file is attached; queueing either of
    the first two is refused up front."""
    handler, _ = mailbox
    secret = tmp_path / ".env"
    secret.write_text("EMPS_SMTP_PASSWORD=hunter2\n")
    reports = alert_settings.reports_dir
    reports.mkdir(parents=True)
    link = reports / "innocent.csv"
    link.symlink_to(secret)
    (reports / "tasks.csv").write_text("task_id\n7\n")
    with connect(Role.ALERTING, alert_settings) as conn:
        for path in (secret, link, reports / ".." / ".env"):
            with pytest.raises(AttachmentError, match="refused"):
                enqueue_email(
                    conn,
                    to="x@crews.example",
                    subject="s",
                    text="t",
                    html=None,
                    key=f"refused/{path}",
                    event="test",
                    attachments=[path],
                    settings=alert_settings,
                )
        # Anyone able to write ops.notifications directly still cannot mail the file.
        for key, path in (("outside", secret), ("link", link), ("ok", reports / "tasks.csv")):
            conn.execute(
                "insert into ops.notifications (channel, recipient, subject, body_text,"
                " dedupe_key, event, attachments) values ('email', 'x@crews.example', %s, 't',"
                " %s, 'test', %s)",
                (key, key, [str(path)]),
            )
    result = send_notifications(alert_settings)
    assert (result.sent, result.dead) == (1, 2)
    errors = {row[0]: row[3] for row in _rows(alert_settings)}
    assert "outside the reports folder" in errors["outside"]
    assert "is a symbolic link" in errors["link"]
    (mail,) = list_mailbox(handler.directory)
    msg = read_mail(mail.path)
    assert [p.get_filename() for p in msg.iter_attachments()] == ["tasks.csv"]
    everything = b"".join(p.read_bytes() for p in handler.directory.glob("*.eml"))
    assert b"hunter2" not in everything


def test_a_row_that_cannot_be_an_email_is_dead_and_the_rest_go_out(alert_settings, mailbox):
    """A recipient with a line break (header injection) ends that row dead with the reason;
    the rows after it in the batch are delivered."""
    handler, _ = mailbox
    keys = _queue(alert_settings, 3)
    with connect(Role.OWNER, alert_settings) as conn:
        conn.execute(
            "update ops.notifications set recipient = 'a@crews.example\nBcc: all@evil.example'"
            " where dedupe_key = %s",
            (keys[0],),
        )
    result = send_notifications(alert_settings)
    assert (result.sent, result.dead) == (2, 1)
    rows = {row[0]: row for row in _rows(alert_settings)}
    assert rows[keys[0]][1] == "dead" and "cannot be built as an email" in rows[keys[0]][3]
    assert handler.stored == 2


def test_smtp_down_for_two_hours_kills_nothing_and_all_arrive_within_a_minute_of_its_return(
    alert_settings, clock, tmp_path
):
    """The SMTP server unreachable for 2 hours while the send-notifications schedule keeps
    running: no notification dies, and each arrives exactly once at the first run after the
    server is back, within a minute."""
    interval = deployment_spec("send-notifications")["schedules"][0]["interval"]
    defaults = NotificationSettings.model_fields
    port = free_port()  # nothing listens here until the server "returns"
    settings = alert_settings.replace(
        notifications={
            "smtp_port": port,
            "backoff_s": defaults["backoff_s"].default,
            "outage_retry_s": defaults["outage_retry_s"].default,
            "max_attempts": defaults["max_attempts"].default,
        }
    )
    _queue(settings, 20)
    runs = 0
    while runs * interval < 2 * 3600:
        clock.advance(interval)
        runs += 1
        result = send_notifications(settings, clock=clock)
        assert result.sent == 0 and result.dead == 0
    assert runs >= 120
    assert "unreachable" in result.errors[0]
    assert {(row[1], row[2]) for row in _rows(settings)} == {("failed", 0)}
    assert oldest_pending_age_s(settings, now=clock.now()) > 2 * 3600 - interval

    handler = MailboxHandler(tmp_path / "back")
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    clock.advance(17)  # the server returns between two runs
    returned = clock.now()
    controller.start()
    try:
        clock.advance(interval - 17)
        result = send_notifications(settings, clock=clock)
    finally:
        controller.stop()
    assert result.sent == 20
    rows = _rows(settings)
    assert {row[1] for row in rows} == {"sent"}
    assert all((row[4] - returned).total_seconds() <= 60 for row in rows)
    assert len(handler.received) == 20 and set(handler.received.values()) == {1}
    assert oldest_pending_age_s(settings, now=clock.now()) == 0


def test_a_sender_whose_lease_ran_out_cannot_send_or_mark_a_row_another_sender_took(
    alert_settings, mailbox, clock
):
    """A sender stalled past its lease finds the row taken over: it does not send it, and its
    late 'failed' mark changes nothing; the sender that took it over delivers it once."""
    handler, _ = mailbox
    _queue(alert_settings, 1)
    clock.advance(1)  # the row is due
    with connect(Role.ALERTING, alert_settings, autocommit=True) as conn:
        conn.row_factory = dict_row
        stale = claim_due(conn, worker="stalled", limit=10, settings=alert_settings, clock=clock)
        (row,) = stale.rows
        clock.advance(alert_settings.notifications.lease_s + 1)
        taken = claim_due(conn, worker="healthy", limit=10, settings=alert_settings, clock=clock)
        assert [r["id"] for r in taken.rows] == [row["id"]]
        assert not stale.keep(row)  # so the stalled sender does not send it
        late = SendReport()
        stale.failed(row, DeliveryError("late", permanent=True), late)
        stale.sent(row, late)
        assert (late.dead, late.sent, late.lost) == (0, 0, 2)
        status = conn.execute(
            "select status, claimed_by from ops.notifications where id = %s", (row["id"],)
        ).fetchone()
        assert (status["status"], status["claimed_by"]) == ("sending", "healthy")
    clock.advance(alert_settings.notifications.lease_s + 1)
    assert send_notifications(alert_settings, clock=clock).sent == 1
    assert handler.accepted == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_username_set_and_server_without_starttls_refuses_to_log_in_and_says_why(
    alert_settings, crew, clear_auth_mailbox
):
    """A server offering login but no STARTTLS: the sender sends neither password nor alert,
    says why and what to set, and keeps the notifications; explicitly allowed, it logs in."""
    handler, port = clear_auth_mailbox
    _queue(alert_settings, 2)
    settings = alert_settings.replace(
        notifications={
            "smtp_port": port,
            "smtp_username": "emps",
            "smtp_password": SecretStr("right"),
        }
    )
    result = send_notifications(settings)
    assert (result.sent, result.dead, result.retrying) == (0, 0, 2)
    (error,) = set(result.errors)
    assert "not logging in as 'emps'" in error
    assert "does not offer STARTTLS" in error
    assert "EMPS_SMTP_ALLOW_PLAIN_LOGIN" in error
    assert handler.logins == [] and handler.accepted == 0
    assert {(row[1], row[2]) for row in _rows(settings)} == {("failed", 0)}

    allowed = settings.replace(notifications={"smtp_allow_plain_login": True})
    assert send_notifications(allowed).sent == 2
    assert handler.logins[-1] == b"emps" and handler.over_tls == [False, False]


def test_mail_goes_over_starttls_whenever_the_server_offers_it(
    alert_settings, auth_mailbox, ca_file
):
    """With default settings and no login, a server offering STARTTLS gets the mail encrypted."""
    handler, port = auth_mailbox
    handler.logins.clear()
    settings = alert_settings.replace(
        notifications={
            "smtp_port": port,
            "ca_file": ca_file,
            "smtp_username": "emps",
            "smtp_password": SecretStr("right"),
        }
    )
    _queue(settings, 2)
    assert send_notifications(settings).sent == 2
    assert handler.over_tls == [True, True]


def test_a_certificate_that_cannot_be_verified_stops_sending_instead_of_falling_back(
    alert_settings, server_tls, tmp_path
):
    """A STARTTLS server whose certificate is signed by an unknown CA: nothing is sent (not even
    in clear text), the error says which setting trusts a private CA, the rows wait."""
    handler = MailboxHandler(tmp_path / "untrusted")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=server_tls)
    controller.start()
    try:
        settings = alert_settings.replace(notifications={"smtp_port": port})
        _queue(settings, 1)
        result = send_notifications(settings)
    finally:
        controller.stop()
    assert (result.sent, result.dead, result.retrying) == (0, 0, 1)
    assert "could not be verified" in result.errors[0]
    assert "EMPS_NOTIFY_CA_FILE" in result.errors[0]
    assert handler.accepted == 0


def test_implicit_tls_server_on_its_own_port_gets_the_mail(alert_settings, server_tls, ca_file):
    """EMPS_SMTP_TLS=tls speaks TLS from the first byte (the port 465 kind of server)."""
    handler = MailboxHandler(alert_settings.home / "implicit")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ssl_context=server_tls)
    controller.start()
    try:
        settings = alert_settings.replace(
            notifications={"smtp_port": port, "smtp_tls": "tls", "ca_file": ca_file}
        )
        _queue(settings, 1)
        assert send_notifications(settings).sent == 1
        plain = settings.replace(notifications={"smtp_tls": "auto"})
        _queue_one_more(plain)
        assert send_notifications(plain).sent == 0  # a clear-text client cannot talk to it
    finally:
        controller.stop()
    assert handler.stored == 1


def _queue_one_more(settings: Settings) -> None:
    with connect(Role.ALERTING, settings) as conn:
        enqueue_email(
            conn,
            to="late@crews.example",
            subject="s",
            text="t",
            html=None,
            key="one-more",
            event="test",
            settings=settings,
        )


def test_sms_goes_over_https_and_an_http_gateway_is_refused_unless_allowed(
    alert_settings, https_sms_gateway, sms_gateway, ca_file
):
    """Texts go to an https gateway with the bearer token; an http:// gateway gets nothing
    (the token would travel in clear) until EMPS_SMS_ALLOW_HTTP is set."""
    token = SecretStr("tok-123")
    https = alert_settings.replace(
        notifications={
            "sms_gateway_url": f"https://127.0.0.1:{https_sms_gateway.server_port}/send?to={{to}}",
            "sms_gateway_token": token,
            "ca_file": ca_file,
        }
    )
    crew = RecipientsConfig(
        (Recipient("On call", "technician", ("*",), None, "+15550100001", ("sms",)),)
    )
    _open_alert(https, crew, "GEN-0301")
    assert send_notifications(https).sent == 1
    assert https_sms_gateway.requests[0]["auth"] == "Bearer tok-123"

    http = https.replace(
        notifications={
            "sms_gateway_url": f"http://127.0.0.1:{sms_gateway.server_port}/send?to={{to}}"
        }
    )
    _open_alert(http, crew, "GEN-0302")
    refused = send_notifications(http)
    assert (refused.sent, refused.dead, refused.retrying) == (0, 0, 1)
    assert "not https://" in refused.errors[0] and "EMPS_SMS_ALLOW_HTTP" in refused.errors[0]
    assert sms_gateway.requests == []
    allowed = http.replace(notifications={"sms_allow_http": True})
    assert send_notifications(allowed).sent == 1
    assert len(sms_gateway.requests) == 1


def test_the_oldest_waiting_notification_is_measured_from_when_it_became_due(alert_settings, clock):
    """The age counts from the notification's due time (quiet hours excluded), only while it
    is waiting: 0 once nothing waits."""
    _queue(alert_settings, 2)
    with connect(Role.OWNER, alert_settings) as conn:
        conn.execute(
            "update ops.notifications set due_at = %s, next_attempt_at = %s"
            " where dedupe_key = 'test/001'",
            (clock.now() + timedelta(hours=8),) * 2,
        )
    clock.advance(600)
    with connect(Role.READER, alert_settings) as conn:
        waiting = backlog(conn, clock.now(), detailed=False)
    assert waiting.waiting == 1  # the one held back by quiet hours is not late
    assert 590 < waiting.oldest_age_s < 660
    assert send_notifications(alert_settings, clock=clock).sent == 1
    assert oldest_pending_age_s(alert_settings, now=clock.now()) == 0


def test_the_dashboard_metrics_and_operations_alert_agree_on_what_waits(
    alert_settings, dashboard_marts
):
    """A notification waits when it is due and neither sent nor given up: the Alerts page's
    warning, /metrics and the operations alert count the same ones and the same oldest, so the
    page never says all is well while the alert fires."""
    from emps import queries
    from emps.metrics import PlatformCollector

    states = [  # (status, due this many minutes ago)
        ("pending", 30),  # the one waiting longest
        ("failed", 20),
        ("sending", 10),
        ("pending", -60),  # held back by quiet hours
        ("sent", 40),
        ("dead", 50),
    ]
    keys = _queue(alert_settings, len(states))
    with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
        for key, (status, minutes) in zip(keys, states, strict=True):
            conn.execute(
                "update ops.notifications set status = %s,"
                " due_at = now() - make_interval(mins => %s) where dedupe_key = %s",
                (status, minutes, key),
            )
        [oldest_id] = conn.execute(
            "select id from ops.notifications where dedupe_key = %s", (keys[0],)
        ).fetchone()
    page = queries.notification_backlog(alert_settings)
    with connect(Role.ALERTING, alert_settings) as conn:
        alert = backlog(conn)
    families = {f.name: f for f in PlatformCollector(alert_settings).collect()}
    (metric,) = families["emps_notification_oldest_pending_seconds"].samples
    assert (page.waiting, page.oldest_id) == (alert.waiting, alert.oldest_id) == (3, oldest_id)
    assert alert.oldest_recipient == "crew0@crews.example"
    for age in (page.oldest_age_s, alert.oldest_age_s, metric.value):
        assert 30 * 60 <= age < 32 * 60


def test_metrics_show_the_age_of_the_oldest_waiting_notification(alert_settings):
    """/metrics exposes how long the oldest due notification has waited and the age that
    should alert, so an outage is heard without mail."""
    from emps.metrics import PlatformCollector

    _queue(alert_settings, 1)
    with connect(Role.OWNER, alert_settings) as conn:
        conn.execute("update ops.notifications set due_at = now() - interval '20 minutes'")
    families = {f.name: f for f in PlatformCollector(alert_settings).collect()}
    (age,) = families["emps_notification_oldest_pending_seconds"].samples
    assert 1200 <= age.value < 1300
    (threshold,) = families["emps_notification_pending_alert_seconds"].samples
    assert threshold.value == alert_settings.notifications.pending_alert_s


def test_settings_refuse_a_lease_shorter_than_two_sends_and_an_http_sms_gateway():
    """Settings that would allow a double send or a token in clear text are refused at start,
    naming the variables to change."""
    with pytest.raises(ValidationError, match="EMPS_NOTIFY_LEASE_S"):
        Settings(notifications={"lease_s": 15, "smtp_timeout_s": 10})
    with pytest.raises(ValidationError, match="EMPS_SMS_ALLOW_HTTP"):
        Settings(notifications={"sms_gateway_url": "http://gateway.example/send?to={to}"})
    assert Settings(
        notifications={"sms_gateway_url": "http://gw.example/{to}", "sms_allow_http": True}
    ).notifications.sms_allow_http


def test_emps_up_runs_its_smtp_sink_only_for_a_local_smtp_host_and_only_on_loopback(settings):
    """The sink is on by default for the local setup, bound to 127.0.0.1; pointing EMPS_SMTP_HOST
    at a relay, or EMPS_SMTP_SINK=false, starts none (the relay's mail is never captured)."""
    env = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    port = free_port()
    local = settings.replace(home=Path(os.environ["EMPS_HOME"]), notifications={"smtp_port": port})
    (sink,) = [h for h in mail_and_metrics(local, env) if h.name == "smtp-sink"]
    assert sink.url == f"smtp://127.0.0.1:{port}"
    stop = sink.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            assert conn.recv(100).startswith(b"220")
    finally:
        stop()
    relay = local.replace(notifications={"smtp_host": "relay.crews.example"})
    off = local.replace(notifications={"smtp_sink": False})
    for other in (relay, off):
        assert [h.name for h in mail_and_metrics(other, env)] == ["metrics"]
