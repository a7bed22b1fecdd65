"""How long the notifications still to be delivered have waited: what the operations alert on
the outbox, /metrics, the flows' logs, `emps notify status` and the dashboard read. Apart from
the outbox so that readers import no mail or HTTP client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import tuple_row

from emps.db import Role, connect
from emps.settings import Settings, get_settings


@dataclass(frozen=True)
class Backlog:
    """The notifications due and not yet delivered (not sent, not dead)."""

    waiting: int
    oldest_age_s: float  # how long the one waiting longest has been due; 0 when none waits
    oldest_id: int | None
    oldest_recipient: str | None
    last_error: str | None  # the oldest one's last error

    def describe(self, settings: Settings) -> str:
        minutes = self.oldest_age_s / 60
        text = (
            f"{self.waiting} notifications waiting to be sent, the oldest (#{self.oldest_id} to "
            f"{self.oldest_recipient}) for {minutes:.0f} min (EMPS_NOTIFY_PENDING_ALERT_S="
            f"{settings.notifications.pending_alert_s:g})"
        )
        return text + (f"; last error: {self.last_error}" if self.last_error else "")


# Which notifications wait is ops.notification_backlog's rule (migration 0190), the one the
# dashboard's mart reads too; the recipient and error of the oldest only the outbox's own roles
# (alerting, the owner) may read.
SUMMARY = """
    select waiting, oldest_age_s, oldest_notification_id, null::text, null::text
    from ops.notification_backlog(coalesce(%(now)s::timestamptz, now()))
"""
DETAILED = """
    select b.waiting, b.oldest_age_s, b.oldest_notification_id, n.recipient, n.last_error
    from ops.notification_backlog(coalesce(%(now)s::timestamptz, now())) b
    left join ops.notifications n on n.id = b.oldest_notification_id
"""


def backlog(
    conn: psycopg.Connection, now: datetime | None = None, detailed: bool = True
) -> Backlog:
    """The waiting notifications as of `now` (the database's time when None). A notification
    held back by quiet hours is not waiting until its time comes. `detailed`: with the oldest's
    recipient and last error (the alerting role and the owner); without, as the dashboard's
    read-only role may see it."""
    cursor = conn.cursor(row_factory=tuple_row)
    row = cursor.execute(DETAILED if detailed else SUMMARY, {"now": now}).fetchone()
    assert row is not None  # the function returns one row
    count, age, oldest_id, recipient, error = row
    return Backlog(int(count), float(age), oldest_id, recipient, error)


def read_backlog(settings: Settings | None = None, *, now: datetime | None = None) -> Backlog:
    """`backlog`, with details, on a connection of its own (the alerting role)."""
    with connect(Role.ALERTING, settings or get_settings()) as conn:
        return backlog(conn, now)


def oldest_pending_age_s(
    settings: Settings | None = None,
    *,
    conn: psycopg.Connection | None = None,
    now: datetime | None = None,
) -> float:
    """Seconds the oldest due notification not yet sent (nor dead) has waited; 0 when none.

    What the operations alert on the outbox reads (above EMPS_NOTIFY_PENDING_ALERT_S: mail is
    not going out). Uses `conn` when given (the reader's role will do); `now` defaults to the
    database's time."""
    if conn is not None:
        return backlog(conn, now, detailed=False).oldest_age_s
    return read_backlog(settings, now=now).oldest_age_s
