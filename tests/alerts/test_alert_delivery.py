"""Notification delivery against a real aiosmtpd server and a local SMS gateway: faults included."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
from aiosmtpd.controller import Controller
from alert_testdata import add_equipment, write_prediction
from pydantic import SecretStr

from emps.alerting.mailbox import MailboxHandler, list_mailbox, read_mail
from emps.alerting.outbox import send_notifications
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.alerting.rules import process_prediction
from emps.db import Role, connect
from emps.processes import free_port


def _statuses(settings):
    with connect(Role.OWNER, settings) as conn:
        return dict(
            conn.execute("select status, count(*) from ops.notifications group by 1").fetchall()
        )


def _open_alert(settings, crew, equipment_id="GEN-0101", site="ALPHA"):
    add_equipment(settings, equipment_id, site)
    payload = write_prediction(settings, equipment_id, 0.92, "CRITICAL", days=2.5)
    return process_prediction(payload, settings, crew)


def test_email_has_text_html_link_and_sensors(alert_settings, crew, mailbox):
    """The mailbox gets one multipart mail per technician with probability, days to failure,
    top sensors and the dashboard link."""
    handler, _ = mailbox
    _open_alert(alert_settings, crew)
    report = send_notifications(alert_settings)
    assert (report.sent, report.retrying, report.dead) == (2, 0, 0)
    mails = list_mailbox(handler.directory)
    assert sorted(m.to for m in mails) == ["alpha2@crews.example", "alpha@crews.example"]
    msg = read_mail(mails[0].path)
    assert msg["Subject"].startswith("[EMPS CRITICAL] GEN-0101 at ALPHA: 92% failure risk")
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    for body in (text, html):
        assert "2.5 days" in body
        assert "vibration trend over 24 h" in body
        assert "http://dash.test/equipment?equipment=GEN-0101" in body


def test_html_in_equipment_id_and_message_is_escaped(alert_settings, crew, mailbox):
    """Script tags in an equipment id or sensor label arrive as text, never as markup."""
    handler, _ = mailbox
    evil = '<script>alert("x")</script>'
    payload = write_prediction(alert_settings, "GEN-0102", 0.9, "CRITICAL")
    with connect(Role.OWNER, alert_settings) as conn:
        conn.execute(
            "update ops.predictions set equipment_id = %s,"
            " explanation = jsonb_build_array(jsonb_build_object('label', %s::text))",
            (evil, evil),
        )
    payload["equipment_id"] = evil
    everyone = RecipientsConfig((Recipient("All", "technician", ("*",), "all@crews.example"),))
    process_prediction(payload, alert_settings, everyone)
    send_notifications(alert_settings)
    (mail,) = list_mailbox(handler.directory)
    html = read_mail(mail.path).get_body(("html",)).get_content()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


def test_smtp_down_then_back_delivers_each_message_exactly_once(alert_settings, crew, mailbox):
    """While SMTP is down nothing is lost; once it is back every mail arrives exactly once."""
    handler, port = mailbox
    _open_alert(alert_settings, crew, "GEN-0103")
    _open_alert(alert_settings, crew, "GEN-0104")
    down = alert_settings.replace(notifications={"smtp_port": free_port()})
    for _ in range(3):
        report = send_notifications(down)
        assert report.sent == 0
        assert "unreachable" in report.errors[0]
    assert _statuses(alert_settings) == {"failed": 4}
    assert send_notifications(alert_settings).sent == 4
    assert send_notifications(alert_settings).claimed == 0
    assert _statuses(alert_settings) == {"sent": 4}
    assert handler.accepted == handler.stored == 4
    assert len(list_mailbox(handler.directory)) == 4


def test_one_refused_recipient_does_not_block_the_others(alert_settings, mailbox):
    """The server refusing one address: the others get the mail, the refusal is recorded."""
    handler, _ = mailbox
    crew = RecipientsConfig(
        (
            Recipient("Good", "technician", ("*",), "alpha@crews.example"),
            Recipient("Gone", "technician", ("*",), "refused@crews.example"),
            Recipient("Good 2", "technician", ("*",), "bravo@crews.example"),
        )
    )
    _open_alert(alert_settings, crew)
    report = send_notifications(alert_settings)
    assert (report.sent, report.dead) == (2, 1)
    with connect(Role.OWNER, alert_settings) as conn:
        dead = conn.execute(
            "select recipient, last_error from ops.notifications where status = 'dead'"
        ).fetchall()
    assert dead[0][0] == "refused@crews.example"
    assert "550" in dead[0][1]
    assert sorted(m.to for m in list_mailbox(handler.directory)) == [
        "alpha@crews.example",
        "bravo@crews.example",
    ]


def test_wrong_smtp_password_gives_clear_error_without_retry_storm(
    alert_settings, crew, auth_mailbox, ca_file
):
    """A refused login fails the batch once with a message naming the settings to fix, waits
    before trying again instead of hammering the server, never shows the password, and kills
    no notification: once the password is right they are all delivered."""
    handler, port = auth_mailbox
    _open_alert(alert_settings, crew)
    wrong = alert_settings.replace(
        notifications={
            "smtp_port": port,
            "smtp_username": "emps",
            "smtp_password": SecretStr("s3cret-wrong"),
            "ca_file": ca_file,
            "outage_retry_s": 600.0,
            "max_attempts": 2,
        }
    )
    report = send_notifications(wrong)
    assert report.sent == 0 and report.retrying == 2
    assert len(report.errors) == 1
    assert "refused the login of user 'emps'" in report.errors[0]
    assert "EMPS_SMTP_PASSWORD" in report.errors[0]
    assert "s3cret-wrong" not in report.errors[0]
    per_run = len(handler.logins)  # aiosmtplib tries each mechanism the server offers
    assert send_notifications(wrong).claimed == 0  # waiting, not hammering the server
    assert len(handler.logins) == per_run
    for _ in range(3):  # more refused logins than the attempt limit
        with connect(Role.OWNER, alert_settings) as conn:
            conn.execute("update ops.notifications set next_attempt_at = now()")
        assert send_notifications(wrong).dead == 0
    assert len(handler.logins) == 4 * per_run
    right = wrong.replace(notifications={"smtp_password": SecretStr("right")})
    with connect(Role.OWNER, alert_settings) as conn:
        conn.execute("update ops.notifications set next_attempt_at = now()")
    assert send_notifications(right).sent == 2
    assert handler.stored == 2 and handler.over_tls == [True, True]


class _SlowMailbox(MailboxHandler):
    """A mailbox that takes a moment per message and signals after the third one."""

    def __init__(self, directory):
        super().__init__(directory)
        self.third = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        import asyncio

        await asyncio.sleep(0.2)
        reply = await super().handle_DATA(server, session, envelope)
        if self.accepted >= 3:
            self.third.set()
        return reply


def test_sender_killed_mid_batch_loses_nothing_and_mailbox_has_each_once(alert_settings, tmp_path):
    """A sender process killed mid-batch: its lease expires, the next sender finishes, and the
    mailbox holds every message exactly once (same Message-ID when one is re-sent)."""
    handler = _SlowMailbox(tmp_path / "slow-mailbox")
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        crew = RecipientsConfig(
            tuple(
                Recipient(f"T{i}", "technician", ("*",), f"tech{i}@crews.example")
                for i in range(10)
            )
        )
        _open_alert(alert_settings, crew)
        env = {
            **os.environ,
            "EMPS_SMTP_PORT": str(port),
            "EMPS_NOTIFY_LEASE_S": "3",
            "EMPS_SMTP_TIMEOUT_S": "1.5",
        }
        sender = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from emps.alerting.outbox import send_notifications; send_notifications()",
            ],
            env=env,
        )
        assert handler.third.wait(timeout=60), "the sender never delivered three messages"
        sender.send_signal(signal.SIGKILL)
        sender.wait()
        assert 3 <= handler.stored < 10
        with connect(Role.OWNER, alert_settings, autocommit=True) as conn:
            assert conn.execute(
                "select count(*) from ops.notifications where status = 'sending'"
            ).fetchone()[0]
            while conn.execute(
                "select count(*) from ops.notifications"
                " where status = 'sending' and lease_expires_at >= now()"
            ).fetchone()[0]:
                time.sleep(0.2)
        finish = alert_settings.replace(notifications={"smtp_port": port})
        send_notifications(finish)
        assert _statuses(alert_settings) == {"sent": 10}
        assert handler.stored == 10
        assert len({m.message_id for m in list_mailbox(handler.directory)}) == 10
        # At most the one message in flight when the process died reached the server twice.
        assert handler.accepted - handler.stored <= 1
    finally:
        controller.stop()


def test_sms_goes_through_the_gateway_with_token_and_retries(alert_settings, sms_gateway):
    """A CRITICAL alert texts the on-call phone through the gateway with the bearer token; a
    gateway error is retried and the text is delivered once."""
    url = f"http://127.0.0.1:{sms_gateway.server_port}/send?to={{to}}"
    settings = alert_settings.replace(
        notifications={
            "sms_gateway_url": url,
            "sms_gateway_token": SecretStr("tok-123"),
            "sms_allow_http": True,
        }
    )
    crew = RecipientsConfig(
        (Recipient("On call", "technician", ("*",), None, "+15550100001", ("sms",)),)
    )
    _open_alert(settings, crew)
    sms_gateway.fail_next = 1
    first = send_notifications(settings)
    assert (first.sent, first.retrying) == (0, 1)
    assert "503" in first.errors[0]
    assert send_notifications(settings).sent == 1
    assert len(sms_gateway.requests) == 2
    request = sms_gateway.requests[-1]
    assert request["auth"] == "Bearer tok-123"
    assert request["path"] == "/send?to=%2B15550100001"
    assert request["text"].startswith("EMPS CRITICAL GEN-0101@ALPHA: 92% fail risk")


def test_an_event_naming_no_prediction_leaves_nothing_behind(alert_settings, crew, caplog):
    """An event for a prediction that is not in ops.predictions opens no alert, queues no
    notification, and is reported in the log."""
    add_equipment(alert_settings, "GEN-0105")
    payload = write_prediction(alert_settings, "GEN-0105", 0.9, "CRITICAL")
    payload["prediction_id"] += 1000  # no such prediction
    assert process_prediction(payload, alert_settings, crew).action == "unknown"
    assert "not in ops.predictions" in caplog.text
    assert _statuses(alert_settings) == {}
    assert psycopg  # the module is imported for the error types used above
