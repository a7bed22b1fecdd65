"""The notification outbox (ops.notifications): rows written with the alert, delivered by senders.

Guarantees:
- A row is claimed ('sending', a lease, the sender's name and a claim token) and committed before
  anything leaves the process. Every later update of the row names that sender and token, so a
  sender whose lease ran out can neither mark a row another sender now holds, nor send it: before
  each message a sender checks that its lease still covers the whole send (EMPS_SMTP_TIMEOUT_S,
  enforced) and renews it when it does not. A batch may therefore take as long as it needs.
- Each row ends sent, failed (to retry) or dead on its own: whatever goes wrong with one row (a
  refused recipient, a missing attachment, a header that cannot be encoded) is recorded on that
  row with the reason, and the rest of the batch goes on.
- A server or gateway that can take nothing (down, login or TLS refused) uses up no attempt: the
  rows wait EMPS_NOTIFY_OUTAGE_RETRY_S between tries for as long as it takes, and `dead` is kept
  for errors the row itself causes. `backlog.oldest_pending_age_s` (and the metric
  emps_notification_oldest_pending_seconds) is how an operator learns that mail is not going out.

Delivery to the server is at least once: a sender that dies after the server accepted a message
and before recording it leaves the lease to expire and the row is sent again, with the same
Message-ID (and, for SMS, the same Idempotency-Key), so a mailbox or gateway that deduplicates on
it - like `emps mail serve` - sees each message exactly once. The duplicate window is the message
in flight when a sender died.

Time comes from a `Clock` (the wall clock by default) so tests can move it forward.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import socket
import stat
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from emps.alerting.email import DeliveryError, build_message, close_smtp, open_smtp, send_one
from emps.alerting.messages import AlertNotice, render_email, render_sms
from emps.alerting.recipients import Recipient, deliver_after
from emps.alerting.sms import check_gateway, send_sms, sms_client
from emps.db import Role, connect
from emps.settings import Settings, get_settings

log = logging.getLogger(__name__)

# Rows claimed per round trip. The lease is renewed while they are sent, so this bounds only
# how much one sender holds while others could help.
CLAIM_BATCH = 50
# Statuses of a notification still to be delivered.
WAITING = ("pending", "failed", "sending")


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock (UTC)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()


def dedupe_key(alert_id: int, event: str, level: str, channel: str, address: str) -> str:
    return f"alert-{alert_id}/{event}/{level}/{channel}/{address.lower()}"


def enqueue_alert_notifications(
    conn: psycopg.Connection[Any],
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
            if channel == "sms" and not settings.notifications.sms_gateway_url:
                continue
            row = conn.execute(
                """
                insert into ops.notifications (alert_id, channel, recipient, subject, body_text,
                    body_html, dedupe_key, event, next_attempt_at, due_at)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
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
                    due,
                ),
            ).fetchone()
            written += row is not None
    return written


class AttachmentError(DeliveryError):
    """An attachment that cannot be sent: missing, or not a file of the reports folder."""

    def __init__(self, message: str):
        super().__init__(message, permanent=True)


def attachment_path(name: str | Path, settings: Settings) -> Path:
    """The file `name` if it is a regular file inside the reports folder reached without a
    symbolic link; raises AttachmentError saying why not. Only those files may be mailed: a row
    of ops.notifications naming any other file (.env, a key) is refused, not sent."""
    root = Path(os.path.abspath(settings.reports_dir))
    path = Path(os.path.abspath(name))  # '..' resolved by name, before any link is followed
    if not path.is_relative_to(root) or path == root:
        raise AttachmentError(
            f"attachment {name} is outside the reports folder {root}: refused (only report "
            "files are mailed)"
        )
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            raise AttachmentError(
                f"attachment {name}: {current} is a symbolic link: refused (only report files "
                "are mailed)"
            )
    if not path.exists():
        raise AttachmentError(
            f"attachment {name} is missing (deleted before the mail was sent): queue the "
            "report again"
        )
    if not path.is_file():
        raise AttachmentError(f"attachment {name} is not a regular file: refused")
    return path


def read_attachment(name: str, settings: Settings) -> tuple[str, bytes, str]:
    """(file name, bytes, MIME type) of a report file, opened without following a link."""
    path = attachment_path(name, settings)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise AttachmentError(f"attachment {name} cannot be read: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise AttachmentError(f"attachment {name} is not a regular file: refused")
        data = fh.read()
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, data, mime


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
    settings: Settings | None = None,
) -> bool:
    """An email not tied to an alert (the daily report). False when `key` was already queued.

    Attachments are files of the reports folder (EMPS_HOME/reports), read when the mail is sent;
    any other path raises AttachmentError here, before anything is queued."""
    settings = settings or get_settings()
    paths = [str(attachment_path(p, settings)) for p in attachments]
    row = conn.execute(
        """
        insert into ops.notifications (channel, recipient, subject, body_text, body_html,
            dedupe_key, event, attachments)
        values ('email', %s, %s, %s, %s, %s, %s, %s)
        on conflict (dedupe_key) do nothing returning id
        """,
        (to, subject, text, html, key, event, paths),
    ).fetchone()
    return row is not None


@dataclass
class SendReport:
    claimed: int = 0
    sent: int = 0
    retrying: int = 0  # failed, to be tried again (after backoff, or once the server is back)
    dead: int = 0
    lost: int = 0  # claimed, then taken over by another sender before this one sent them
    errors: list[str] = field(default_factory=list)
    stopped: bool = False  # a server or gateway could take nothing (down, login refused)

    def __str__(self) -> str:
        text = (
            f"{self.claimed} claimed: {self.sent} sent, {self.retrying} to retry, {self.dead} dead"
        )
        return text + (f", {self.lost} taken over by another sender" if self.lost else "")


def default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Claim:
    """Rows one sender holds under one claim token, and every update it may make to them."""

    def __init__(
        self,
        conn: psycopg.Connection,
        rows: list[dict[str, Any]],
        *,
        worker: str,
        token: uuid.UUID,
        lease_until: datetime,
        settings: Settings,
        clock: Clock,
    ):
        self.conn = conn
        self.rows = rows
        self.worker = worker
        self.token = token
        self.lease_until = lease_until
        self.settings = settings
        self.clock = clock
        self.held = {row["id"] for row in rows}

    def _fence(self) -> dict:
        return {"worker": self.worker, "token": self.token}

    def keep(self, row: dict) -> bool:
        """True when `row` is still ours with lease enough for one whole send; renews the lease
        of every row still held when it is not."""
        now = self.clock.now()
        # Margin for the database round trips and other senders' clocks.
        needed = timedelta(seconds=1.5 * self.settings.notifications.smtp_timeout_s)
        if self.lease_until - now < needed:
            renewed = (
                self.conn.cursor(row_factory=dict_row)
                .execute(
                    """
                update ops.notifications
                set lease_expires_at = %(now)s + make_interval(secs => %(lease)s)
                where claimed_by = %(worker)s and claim_token = %(token)s and status = 'sending'
                returning id
                """,
                    {**self._fence(), "now": now, "lease": self.settings.notifications.lease_s},
                )
                .fetchall()
            )
            self.held &= {r["id"] for r in renewed}
            self.lease_until = now + timedelta(seconds=self.settings.notifications.lease_s)
        return row["id"] in self.held

    def _mark(self, row: dict, assignments: LiteralString, params: dict) -> bool:
        query = sql.SQL(
            """
            update ops.notifications set {assignments}, lease_expires_at = null
            where id = %(id)s and claimed_by = %(worker)s and claim_token = %(token)s
              and status = 'sending'
            """
        ).format(assignments=sql.SQL(assignments))
        done = self.conn.execute(query, {**self._fence(), **params, "id": row["id"]}).rowcount
        self.held.discard(row["id"])
        return bool(done)

    def sent(self, row: dict, report: SendReport) -> None:
        if self._mark(
            row,
            "status = 'sent', sent_at = %(now)s, attempts = attempts + 1, last_error = null",
            {"now": self.clock.now()},
        ):
            report.sent += 1
            return
        # Only a sender stalled past its lease (a frozen process) gets here: keep() renews it
        # before every send.
        report.lost += 1
        log.warning(
            "notification #%s was taken over by another sender while %s sent it; the recipient "
            "may get it twice (same Message-ID)",
            row["id"],
            self.worker,
        )

    def failed(self, row: dict, error: DeliveryError, report: SendReport) -> None:
        """The row's own error: counted; 'dead' when permanent or out of attempts, else retried
        after a backoff doubling per attempt up to EMPS_NOTIFY_BACKOFF_MAX_S."""
        settings = self.settings
        attempts = row["attempts"] + 1
        dead = error.permanent or attempts >= settings.notifications.max_attempts
        delay = min(
            settings.notifications.backoff_s * 2 ** (attempts - 1),
            settings.notifications.backoff_max_s,
        )
        reason = f"notification #{row['id']} to {row['recipient']}: {error}"
        done = self._mark(
            row,
            "status = %(status)s, attempts = attempts + 1, last_error = %(error)s,"
            " next_attempt_at = %(now)s + make_interval(secs => %(delay)s)",
            {
                "status": "dead" if dead else "failed",
                "error": str(error)[:2000],
                "now": self.clock.now(),
                "delay": delay,
            },
        )
        if not done:  # another sender holds it now and will record its own outcome
            report.lost += 1
            return
        report.errors.append(reason)
        if dead:
            report.dead += 1
            log.error("%s; given up (dead) after %s attempts", reason, attempts)
        else:
            report.retrying += 1

    def release(self, rows: list[dict], error: DeliveryError, report: SendReport) -> None:
        """The server or gateway took nothing: the rows wait EMPS_NOTIFY_OUTAGE_RETRY_S for the
        next try, their attempts untouched."""
        ids = [row["id"] for row in rows if row["id"] in self.held]
        released = self.conn.execute(
            """
            update ops.notifications
            set status = 'failed', last_error = %(error)s, lease_expires_at = null,
                next_attempt_at = %(now)s + make_interval(secs => %(delay)s)
            where id = any(%(ids)s) and claimed_by = %(worker)s and claim_token = %(token)s
              and status = 'sending'
            """,
            {
                **self._fence(),
                "ids": ids,
                "error": str(error)[:2000],
                "now": self.clock.now(),
                "delay": self.settings.notifications.outage_retry_s,
            },
        ).rowcount
        self.held -= set(ids)
        report.retrying += released
        report.lost += len(ids) - released
        report.errors.append(str(error))
        report.stopped = True


def claim_due(
    conn: psycopg.Connection,
    *,
    worker: str,
    limit: int,
    settings: Settings,
    clock: Clock = SYSTEM_CLOCK,
    alert_ids: Sequence[int] | None = None,
    exclude_ids: Sequence[int] = (),
    channels: Sequence[str] = ("email", "sms"),
) -> Claim:
    """Claim due rows, and rows whose sender's lease expired, with FOR UPDATE SKIP LOCKED."""
    now = clock.now()
    token = uuid.uuid4()
    with conn.transaction():
        rows = (
            conn.cursor(row_factory=dict_row)
            .execute(
                """
            with due as (
                select id from ops.notifications
                where ((status in ('pending', 'failed') and next_attempt_at <= %(now)s)
                       or (status = 'sending' and lease_expires_at < %(now)s))
                  and (%(any_alert)s or alert_id = any(%(alert_ids)s))
                  and not (id = any(%(exclude)s))
                  and channel = any(%(channels)s)
                order by next_attempt_at, id
                limit %(limit)s
                for update skip locked
            )
            update ops.notifications n
            set status = 'sending', claimed_by = %(worker)s, claim_token = %(token)s,
                lease_expires_at = %(now)s + make_interval(secs => %(lease)s)
            from due where n.id = due.id
            returning n.*
            """,
                {
                    "now": now,
                    "any_alert": not alert_ids,
                    "alert_ids": list(alert_ids or []),
                    "exclude": list(exclude_ids),
                    "channels": list(channels),
                    "limit": limit,
                    "worker": worker,
                    "token": token,
                    "lease": settings.notifications.lease_s,
                },
            )
            .fetchall()
        )
    rows.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
    return Claim(
        conn,
        rows,
        worker=worker,
        token=token,
        lease_until=now + timedelta(seconds=settings.notifications.lease_s),
        settings=settings,
        clock=clock,
    )


def _unexpected(exc: Exception) -> DeliveryError:
    log.exception("unexpected error while sending a notification")
    return DeliveryError(f"unexpected error: {exc!r}", connection_lost=True)


def _message(row: dict, settings: Settings):
    """The row as an email; DeliveryError (permanent) when it cannot be one."""
    try:
        attachments = [read_attachment(name, settings) for name in row.get("attachments") or []]
        return build_message(
            to=row["recipient"],
            subject=row["subject"],
            text=row["body_text"],
            html=row["body_html"],
            dedupe_key=row["dedupe_key"],
            settings=settings,
            attachments=attachments,
        )
    except DeliveryError:
        raise
    except Exception as exc:  # a header with a line break, an address that cannot be encoded
        raise DeliveryError(f"cannot be built as an email: {exc}", permanent=True) from exc


async def _deliver_emails(claim: Claim, rows: list[dict], report: SendReport) -> bool:
    """Send the rows on one connection (reopened after one breaks). False when the server could
    take nothing: the rows not yet sent then wait for the next try."""
    settings = claim.settings
    smtp = None
    try:
        for index, row in enumerate(rows):
            try:
                msg = _message(row, settings)
            except DeliveryError as exc:
                claim.failed(row, exc, report)
                continue
            if smtp is None:
                try:
                    smtp = await open_smtp(settings)
                except DeliveryError as exc:
                    claim.release(rows[index:], exc, report)
                    return False
            if not claim.keep(row):
                report.lost += 1
                continue
            try:
                await send_one(smtp, msg, settings)
            except DeliveryError as exc:
                if exc.service:
                    claim.release(rows[index:], exc, report)
                    return False
                claim.failed(row, exc, report)
                if exc.connection_lost:
                    smtp.close()
                    smtp = None
                continue
            except Exception as exc:
                claim.failed(row, _unexpected(exc), report)
                smtp.close()
                smtp = None
                continue
            claim.sent(row, report)
    finally:
        if smtp is not None:
            await close_smtp(smtp)
    return True


async def _deliver_sms(claim: Claim, rows: list[dict], report: SendReport) -> bool:
    """Send the rows through the gateway. False when it could take nothing."""
    notifications = claim.settings.notifications
    try:
        check_gateway(notifications)
    except DeliveryError as exc:
        claim.release(rows, exc, report)
        return False
    async with sms_client(notifications) as client:
        for index, row in enumerate(rows):
            if not claim.keep(row):
                report.lost += 1
                continue
            try:
                await send_sms(
                    client,
                    to=row["recipient"],
                    text=row["body_text"],
                    dedupe_key=row["dedupe_key"],
                    notifications=notifications,
                )
            except DeliveryError as exc:
                if exc.service:
                    claim.release(rows[index:], exc, report)
                    return False
                claim.failed(row, exc, report)
                continue
            except Exception as exc:
                claim.failed(row, _unexpected(exc), report)
                continue
            claim.sent(row, report)
    return True


async def deliver_due(
    settings: Settings | None = None,
    *,
    limit: int = 200,
    alert_ids: Sequence[int] | None = None,
    worker: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SendReport:
    """Claim up to `limit` due notifications and deliver them; each row ends sent, failed or dead.

    Rows are claimed CLAIM_BATCH at a time and each is tried at most once per call. A channel
    whose server or gateway can take nothing is left for the next call; the other goes on.
    """
    settings = settings or get_settings()
    report = SendReport()
    worker = worker or default_worker()
    tried: list[int] = []
    channels = {"email", "sms"}
    with connect(Role.ALERTING, settings, autocommit=True) as conn:
        while report.claimed < limit and channels:
            claim = claim_due(
                conn,
                worker=worker,
                limit=min(CLAIM_BATCH, limit - report.claimed),
                settings=settings,
                clock=clock,
                alert_ids=alert_ids,
                exclude_ids=tried,
                channels=sorted(channels),
            )
            if not claim.rows:
                break
            report.claimed += len(claim.rows)
            tried += [r["id"] for r in claim.rows]
            emails = [r for r in claim.rows if r["channel"] == "email"]
            texts = [r for r in claim.rows if r["channel"] == "sms"]
            if emails and not await _deliver_emails(claim, emails, report):
                channels.discard("email")
            if texts and not await _deliver_sms(claim, texts, report):
                channels.discard("sms")
    return report


def send_notifications(
    settings: Settings | None = None,
    *,
    limit: int = 200,
    alert_ids: Sequence[int] | None = None,
    worker: str | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SendReport:
    """Synchronous entry point of the sender (flows and the CLI)."""
    return asyncio.run(
        deliver_due(settings, limit=limit, alert_ids=alert_ids, worker=worker, clock=clock)
    )


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


def retries_waiting(settings: Settings | None = None) -> bool:
    """Whether a notification failed and waits for its retry: a mail server or SMS gateway down,
    or a recipient refused. A sender that must not wait on a timeout (the scoring run) leaves
    delivery to the send-notifications flow then."""
    with connect(Role.ALERTING, settings or get_settings()) as conn:
        row = conn.execute(
            "select exists (select 1 from ops.notifications where status = 'failed')"
        ).fetchone()
    return bool(row and row[0])
