"""The notification outbox (ops.notifications): rows written with the alert, delivered by a sender.

Guarantee: a row is claimed ('sending', with a lease) and committed before anything leaves the
process, and marked 'sent' right after the server accepts it. A sender that dies between those two
points leaves the lease to expire and the row is delivered again: delivery to the SMTP server is
at least once, with the same Message-ID (and, for SMS, the same Idempotency-Key) every time, so a
mailbox or gateway that deduplicates on it - like `emps mail serve` - sees each message exactly once.
The duplicate window is one message per crashed sender.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg.rows import dict_row

from emps.alerting.email import DeliveryError, build_message, close_smtp, open_smtp, send_one
from emps.alerting.messages import AlertNotice, render_email, render_sms
from emps.alerting.recipients import Recipient, deliver_after
from emps.alerting.sms import send_sms
from emps.db import Role, connect
from emps.settings import Settings, get_settings

MAX_BACKOFF_S = 3600.0
# Rows claimed per round trip: small enough to be sent well within one lease.
CLAIM_BATCH = 50


def dedupe_key(alert_id: int, event: str, level: int, channel: str, address: str) -> str:
    return f"alert-{alert_id}/{event}/{level}/{channel}/{address.lower()}"


def enqueue_alert_notifications(
    conn: psycopg.Connection,
    notice: AlertNotice,
    recipients: Iterable[Recipient],
    now: datetime,
    settings: Settings | None = None,
    key_suffix: str = "",
) -> int:
    """Write one outbox row per recipient and channel, in the caller's transaction. Returns rows new."""
    settings = settings or get_settings()
    subject, text, html = render_email(notice, settings)
    sms_text = render_sms(notice, settings)
    due = deliver_after(notice.severity, now, settings)
    level = f"{notice.escalation_level}{key_suffix}"
    written = 0
    for person in recipients:
        for channel in person.channels:
            address = person.address(channel)
            if not address:
                continue
            if channel == "sms" and not settings.sms_gateway_url:
                continue
            row = conn.execute(
                """
                insert into ops.notifications (alert_id, channel, recipient, subject, body_text,
                    body_html, dedupe_key, event, next_attempt_at)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                on conflict (dedupe_key) do nothing
                returning id
                """,
                (
                    notice.alert_id,
                    channel,
                    address,
                    subject if channel == "email" else "",
                    text if channel == "email" else sms_text,
                    html if channel == "email" else None,
                    dedupe_key(notice.alert_id, notice.event, level, channel, address),
                    notice.event,
                    due,
                ),
            ).fetchone()
            written += row is not None
    return written


def enqueue_email(
    conn: psycopg.Connection,
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    key: str,
    event: str,
    attachments: Sequence[Path] = (),
) -> bool:
    """An email not tied to an alert (the daily report). False when `key` was already queued."""
    row = conn.execute(
        """
        insert into ops.notifications (channel, recipient, subject, body_text, body_html,
            dedupe_key, event, attachments)
        values ('email', %s, %s, %s, %s, %s, %s, %s)
        on conflict (dedupe_key) do nothing returning id
        """,
        (to, subject, text, html, key, event, [str(p) for p in attachments]),
    ).fetchone()
    return row is not None


@dataclass
class SendReport:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False  # a whole-batch error (server down, login refused) ended the run

    def __str__(self) -> str:
        return (
            f"{self.claimed} claimed: {self.sent} sent, {self.retrying} to retry, {self.dead} dead"
        )


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_due(
    conn: psycopg.Connection,
    *,
    worker: str,
    limit: int,
    lease_s: float,
    alert_ids: Sequence[int] | None = None,
    exclude_ids: Sequence[int] = (),
) -> list[dict]:
    """Claim due rows (and rows whose sender's lease expired) with FOR UPDATE SKIP LOCKED."""
    with conn.transaction():
        return conn.execute(
            """
            with due as (
                select id from ops.notifications
                where ((status in ('pending', 'failed') and next_attempt_at <= now())
                       or (status = 'sending' and lease_expires_at < now()))
                  and (%(any_alert)s or alert_id = any(%(alert_ids)s))
                  and not (id = any(%(exclude)s))
                order by next_attempt_at, id
                limit %(limit)s
                for update skip locked
            )
            update ops.notifications n
            set status = 'sending', claimed_by = %(worker)s, attempts = n.attempts + 1,
                lease_expires_at = now() + make_interval(secs => %(lease)s)
            from due where n.id = due.id
            returning n.*
            """,
            {
                "any_alert": not alert_ids,
                "alert_ids": list(alert_ids or []),
                "exclude": list(exclude_ids),
                "limit": limit,
                "worker": worker,
                "lease": lease_s,
            },
        ).fetchall()


def _mark_sent(conn: psycopg.Connection, row: dict) -> None:
    conn.execute(
        "update ops.notifications set status = 'sent', sent_at = now(), lease_expires_at = null,"
        " last_error = null where id = %s and status = 'sending'",
        (row["id"],),
    )


def _mark_failed(
    conn: psycopg.Connection, row: dict, error: str, permanent: bool, settings: Settings
) -> str:
    """'dead' when permanent or out of attempts, else 'failed' with exponential backoff."""
    dead = permanent or row["attempts"] >= settings.notify_max_attempts
    delay = min(settings.notify_backoff_s * 2 ** max(row["attempts"] - 1, 0), MAX_BACKOFF_S)
    status = "dead" if dead else "failed"
    conn.execute(
        "update ops.notifications set status = %s, last_error = %s, lease_expires_at = null,"
        " next_attempt_at = now() + make_interval(secs => %s) where id = %s and status = 'sending'",
        (status, error[:2000], delay, row["id"]),
    )
    return status


def _count(report: SendReport, status: str) -> None:
    if status == "dead":
        report.dead += 1
    else:
        report.retrying += 1


def _fail(conn, rows, exc: DeliveryError, report: SendReport, settings: Settings) -> None:
    report.errors.append(str(exc))
    report.stopped = True
    for row in rows:
        _count(report, _mark_failed(conn, row, str(exc), exc.permanent, settings))


async def _deliver_rows(
    conn, rows: list[dict], send: Callable[[dict], Awaitable[None]], report: SendReport, settings
) -> None:
    """Send each row through `send`: mark it sent as soon as it is accepted, failed (to retry) or
    dead on a row's own error, and stop at an error that dooms the whole batch."""
    for index, row in enumerate(rows):
        try:
            await send(row)
        except DeliveryError as exc:
            if exc.whole_batch:
                _fail(conn, rows[index:], exc, report, settings)
                return
            report.errors.append(str(exc))
            _count(report, _mark_failed(conn, row, str(exc), exc.permanent, settings))
            continue
        _mark_sent(conn, row)
        report.sent += 1


async def _deliver_emails(conn, rows: list[dict], report: SendReport, settings: Settings) -> None:
    try:
        smtp = await open_smtp(settings)
    except DeliveryError as exc:
        # One error for the whole batch: a wrong password or a down server is not retried per row.
        _fail(conn, rows, exc, report, settings)
        return

    async def send(row: dict) -> None:
        msg = build_message(
            to=row["recipient"],
            subject=row["subject"],
            text=row["body_text"],
            html=row["body_html"],
            dedupe_key=row["dedupe_key"],
            settings=settings,
            attachments=_attachments(conn, row),
        )
        await send_one(smtp, msg, settings)

    try:
        await _deliver_rows(conn, rows, send, report, settings)
    finally:
        await close_smtp(smtp)


def _attachments(conn, row: dict) -> list[tuple[str, bytes, str]]:
    """Files named in the row (the daily report's PDF and CSV), read at send time."""
    files = []
    for name in row.get("attachments") or []:
        path = Path(name)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files.append((path.name, path.read_bytes(), mime))
    return files


async def _deliver_sms(conn, rows: list[dict], report: SendReport, settings: Settings) -> None:
    async with httpx.AsyncClient(timeout=settings.smtp_timeout_s) as client:

        async def send(row: dict) -> None:
            await send_sms(
                client,
                to=row["recipient"],
                text=row["body_text"],
                dedupe_key=row["dedupe_key"],
                settings=settings,
            )

        await _deliver_rows(conn, rows, send, report, settings)


async def deliver_due(
    settings: Settings | None = None,
    *,
    limit: int = 200,
    alert_ids: Sequence[int] | None = None,
    worker: str | None = None,
) -> SendReport:
    """Claim up to `limit` due notifications and deliver them; each row ends sent, failed or dead.

    Rows are claimed CLAIM_BATCH at a time so a large backlog never outlives its lease; each row
    is tried at most once per call, and a whole-batch error (server down, login refused) ends
    the call.
    """
    settings = settings or get_settings()
    report = SendReport()
    worker = worker or default_worker()
    tried: list[int] = []
    with connect(Role.ALERTING, settings, autocommit=True) as conn:
        conn.row_factory = dict_row
        while report.claimed < limit and not report.stopped:
            rows = claim_due(
                conn,
                worker=worker,
                limit=min(CLAIM_BATCH, limit - report.claimed),
                lease_s=settings.notify_lease_s,
                alert_ids=alert_ids,
                exclude_ids=tried,
            )
            if not rows:
                break
            report.claimed += len(rows)
            tried += [r["id"] for r in rows]
            emails = [r for r in rows if r["channel"] == "email"]
            texts = [r for r in rows if r["channel"] == "sms"]
            if emails:
                await _deliver_emails(conn, emails, report, settings)
            if texts:
                await _deliver_sms(conn, texts, report, settings)
    return report


def send_notifications(
    settings: Settings | None = None,
    *,
    limit: int = 200,
    alert_ids: Sequence[int] | None = None,
    worker: str | None = None,
) -> SendReport:
    """Synchronous entry point of the sender (flows and the CLI)."""
    return asyncio.run(deliver_due(settings, limit=limit, alert_ids=alert_ids, worker=worker))


def outbox_status(conn: psycopg.Connection) -> dict[str, int]:
    return dict(
        conn.execute("select status, count(*) from ops.notifications group by status").fetchall()
    )


def next_retry_in(conn: psycopg.Connection) -> timedelta | None:
    row = conn.execute(
        "select min(next_attempt_at) - now() from ops.notifications"
        " where status in ('pending', 'failed')"
    ).fetchone()
    return row[0] if row else None
