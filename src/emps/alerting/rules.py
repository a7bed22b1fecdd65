"""Alert rules: one open alert per equipment (and failure mode), escalate, auto-resolve.

Each public function runs one transaction: the alert, its maintenance task and its outbox rows are
committed together or not at all.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from emps.alerting.messages import AlertNotice
from emps.alerting.outbox import enqueue_alert_notifications
from emps.alerting.recipients import RecipientsConfig, load_recipients
from emps.alerting.tasks import ACTOR, ensure_task_for_alert
from emps.db import Role, connect, one
from emps.domain import SETTLING, Severity, assessment_words, remaining_life_words
from emps.settings import Settings, get_settings

ALERTING_SEVERITIES = (Severity.HIGH, Severity.CRITICAL)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionKey:
    """What a prediction event is taken for: the key of a row of ops.predictions, nothing more.
    Anyone who can post to Prefect's events API can post one; what it claims about severity,
    probability or equipment is never believed."""

    prediction_id: int
    prediction_ts: datetime

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PredictionKey:
        """The key of an event payload; errors name the field at fault."""
        missing = [k for k in ("prediction_id", "prediction_ts") if payload.get(k) in (None, "")]
        if missing:
            raise ValueError(f"prediction event payload lacks {', '.join(missing)}: {payload!r}")
        ts = payload["prediction_ts"]
        if isinstance(ts, str):
            # pandas writes nanoseconds (9 digits) that datetime cannot read: keep microseconds.
            ts = datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", ts))
        if ts.tzinfo is None:
            raise ValueError(f"prediction_ts {ts} has no time zone offset")
        return cls(int(payload["prediction_id"]), ts)


@dataclass(frozen=True)
class PredictionSignal:
    """One prediction as the scorer wrote it in ops.predictions."""

    prediction_id: int
    prediction_ts: datetime
    equipment_id: str
    failure_probability: float
    severity: Severity
    days_until_failure: float | None = None
    model_version: str | None = None
    failure_mode: str | None = None  # ops.predictions records none yet
    explanation: tuple[dict, ...] = ()

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PredictionSignal:
        return cls(
            prediction_id=int(row["id"]),
            prediction_ts=row["ts"],
            equipment_id=row["equipment_id"],
            failure_probability=float(row["failure_probability"]),
            severity=Severity(row["severity"]),
            days_until_failure=row["days_until_failure"],
            model_version=row["model_version"],
            failure_mode=row.get("failure_mode"),
            explanation=tuple(row["explanation"] or ()),
        )


PREDICTION = (
    "select id, ts, equipment_id, failure_probability, severity, days_until_failure, "
    "model_version, explanation from ops.predictions where id = %s and ts = %s"
)


@dataclass(frozen=True)
class AlertOutcome:
    action: str  # opened | escalated | updated | duplicate | ignored | unknown
    alert_id: int | None = None
    task_id: int | None = None
    notifications: int = 0


def _message(signal: PredictionSignal, prediction: dict[str, Any]) -> str:
    life = remaining_life_words(
        prediction.get("remaining_life"),
        prediction.get("life_unit"),
        prediction.get("remaining_life_beyond"),
    )
    if not life and signal.days_until_failure is not None:
        life = remaining_life_words(signal.days_until_failure, "day", False)
    caveat = assessment_words(prediction.get("assessment"), prediction.get("assessment_reason"))
    top = ", ".join(
        str(e.get("label") or e.get("feature")) for e in list(prediction["explanation"] or [])[:3]
    )
    return (
        f"{signal.severity} failure risk {signal.failure_probability:.0%}"
        + (f", remaining life {life}" if life else "")
        + (f"; {caveat}" if caveat else "")
        + (f"; top sensors: {top}" if top else "")
    )


def _prediction_facts(row: dict[str, Any]) -> dict[str, Any]:
    """The remaining life and assessment of a prediction, as an AlertNotice takes them."""
    return {
        key: row.get(key)
        for key in (
            "remaining_life",
            "life_unit",
            "remaining_life_beyond",
            "assessment",
            "assessment_reason",
        )
    }


def _equipment(conn: psycopg.Connection[DictRow], equipment_id: str) -> tuple[str, str] | None:
    row = conn.execute(
        "select equipment_type, site from raw.equipment where equipment_id = %s", (equipment_id,)
    ).fetchone()
    return (row["equipment_type"], row["site"]) if row else None


def _audit(
    conn: psycopg.Connection[Any], action: str, alert_id: int, details: dict[str, Any]
) -> None:
    conn.execute(
        "select ops.record_audit(%s, %s, 'alert', %s, %s)",
        (ACTOR, action, str(alert_id), Jsonb(details)),
    )


def process_prediction(
    payload: dict[str, Any],
    settings: Settings | None = None,
    recipients: RecipientsConfig | None = None,
    now: datetime | None = None,
) -> AlertOutcome:
    """Turn one HIGH/CRITICAL prediction into an alert (new, escalated or refreshed), its task and
    its notifications. Replaying the same prediction changes nothing.

    The payload (an event's) only names the prediction: its equipment, severity, probability,
    days until failure and model version are read from ops.predictions, so a forged event raises
    nothing the scorer did not predict, and one naming no prediction is ignored ("unknown")."""
    settings = settings or get_settings()
    key = PredictionKey.from_payload(payload)
    recipients = recipients or load_recipients(settings=settings)
    now = now or datetime.now(UTC)
    with connect(Role.ALERTING, settings, row_factory=dict_row) as conn, conn.transaction():
        row = conn.execute(PREDICTION, (key.prediction_id, key.prediction_ts)).fetchone()
        if row is None:
            log.warning(
                "prediction event names prediction %s at %s, which is not in ops.predictions: "
                "ignored (claimed: %s)",
                key.prediction_id,
                key.prediction_ts.isoformat(),
                {k: payload.get(k) for k in ("equipment_id", "severity", "failure_probability")},
            )
            return AlertOutcome("unknown")
        signal = PredictionSignal.from_row(row)
        claimed = (payload.get("equipment_id"), str(payload.get("severity") or "").upper())
        if claimed != (signal.equipment_id, signal.severity.value) and any(claimed):
            log.warning(
                "prediction event for %s says %s %s, ops.predictions says %s %s: the stored "
                "prediction is used",
                key.prediction_id,
                *claimed,
                signal.equipment_id,
                signal.severity.value,
            )
        if signal.severity not in ALERTING_SEVERITIES:
            return AlertOutcome("ignored")
        # Serialise runs for the same equipment so two events cannot race past the checks below.
        conn.execute("select pg_advisory_xact_lock(hashtext(%s))", (signal.equipment_id,))
        seen = conn.execute(
            "select alert_id from ops.alert_prediction_log"
            " where prediction_id = %s and prediction_ts = %s",
            (signal.prediction_id, signal.prediction_ts),
        ).fetchone()
        if seen:
            return AlertOutcome("duplicate", seen["alert_id"])
        outcome = _apply_prediction(conn, signal, settings, recipients, now)
        conn.execute(
            "insert into ops.alert_prediction_log"
            " (prediction_id, prediction_ts, equipment_id, alert_id, action)"
            " values (%s, %s, %s, %s, %s)",
            (
                signal.prediction_id,
                signal.prediction_ts,
                signal.equipment_id,
                outcome.alert_id,
                outcome.action,
            ),
        )
        return outcome


def _apply_prediction(
    conn: psycopg.Connection[DictRow],
    signal: PredictionSignal,
    settings: Settings,
    recipients: RecipientsConfig,
    now: datetime,
) -> AlertOutcome:
    """The rules themselves, inside the caller's transaction and per-equipment lock."""
    prediction = conn.execute(
        "select explanation, remaining_life, life_unit, remaining_life_beyond, assessment,"
        " assessment_reason from ops.predictions where id = %s and ts = %s",
        (signal.prediction_id, signal.prediction_ts),
    ).fetchone()
    if prediction is None:
        raise LookupError(
            f"prediction {signal.prediction_id} of {signal.equipment_id} at "
            f"{signal.prediction_ts.isoformat()} is not in ops.predictions"
        )
    explanation = list(prediction["explanation"] or [])
    registered = _equipment(conn, signal.equipment_id)
    equipment_type, site = registered or ("unregistered", "unknown")
    message = _message(signal, prediction)
    alert = conn.execute(
        "select * from ops.alerts where equipment_id = %s"
        " and coalesce(failure_mode, '') = coalesce(%s, '') and status <> 'resolved'"
        " for update",
        (signal.equipment_id, signal.failure_mode),
    ).fetchone()

    if prediction["assessment"] == SETTLING:
        # Serviced or repaired within the longest feature window: the features still describe
        # the machine before the work, so nothing opens or rises on them.
        return AlertOutcome("settling", alert["id"] if alert else None)
    if alert is None:
        alert = one(
            conn.execute(
                """
                insert into ops.alerts (equipment_id, prediction_id, prediction_ts, severity,
                    failure_mode, message, created_at, updated_at, last_notified_at)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s) returning *
                """,
                (
                    signal.equipment_id,
                    signal.prediction_id,
                    signal.prediction_ts,
                    signal.severity.value,
                    signal.failure_mode,
                    message,
                    now,
                    now,
                    now,
                ),
            )
        )
        _audit(conn, "alert.open", alert["id"], {"severity": signal.severity.value})
        action, event = "opened", "alert.opened"
    elif Severity(alert["severity"]).rank < signal.severity.rank:
        alert = one(
            conn.execute(
                """
                update ops.alerts set severity = %s, message = %s, prediction_id = %s,
                    prediction_ts = %s, updated_at = %s, last_notified_at = %s
                where id = %s returning *
                """,
                (
                    signal.severity.value,
                    message,
                    signal.prediction_id,
                    signal.prediction_ts,
                    now,
                    now,
                    alert["id"],
                ),
            )
        )
        _audit(
            conn,
            "alert.escalate_severity",
            alert["id"],
            {"severity": signal.severity.value},
        )
        action, event = "escalated", "alert.escalated"
    else:
        # Same or lower severity: keep the alert current, tell nobody again.
        if alert["prediction_ts"] is None or alert["prediction_ts"] <= signal.prediction_ts:
            conn.execute(
                "update ops.alerts set prediction_id = %s, prediction_ts = %s, updated_at = %s"
                " where id = %s",
                (signal.prediction_id, signal.prediction_ts, now, alert["id"]),
            )
        return AlertOutcome("updated", alert["id"])

    # A task needs a registered equipment; an unregistered one still alerts (site "unknown"
    # reaches the crews covering every site) so the registry gap gets noticed.
    task_id = None
    if registered:
        task_id, _ = ensure_task_for_alert(
            conn,
            alert_id=alert["id"],
            equipment_id=signal.equipment_id,
            severity=signal.severity.value,
            failure_probability=signal.failure_probability,
            days_until_failure=signal.days_until_failure,
            now=now,
            settings=settings,
        )
    notice = AlertNotice(
        alert_id=alert["id"],
        equipment_id=signal.equipment_id,
        equipment_type=equipment_type,
        site=site,
        severity=signal.severity.value,
        failure_probability=signal.failure_probability,
        days_until_failure=signal.days_until_failure,
        message=message,
        event=event,
        escalation_level=alert["escalation_level"],
        top_sensors=explanation,
        task=_task_line(conn, task_id),
        **_prediction_facts(prediction),
    )
    written = enqueue_alert_notifications(
        conn,
        notice,
        recipients.for_alert(site, alert["escalation_level"]),
        now,
        settings,
        key_suffix=f"/{signal.severity.value}",
    )
    return AlertOutcome(action, alert["id"], task_id, written)


def process_pending(
    settings: Settings | None = None,
    recipients: RecipientsConfig | None = None,
    lookback: timedelta = timedelta(hours=6),
    limit: int = 1000,
) -> list[AlertOutcome]:
    """Handle HIGH/CRITICAL predictions of the last `lookback` that no alert run has handled:
    their event was lost (the server refused the triggered run) or their own run has not
    started yet. Oldest first, so a HIGH then CRITICAL sequence escalates as it happened."""
    settings = settings or get_settings()
    recipients = recipients or load_recipients(settings=settings)
    with connect(Role.ALERTING, settings, row_factory=dict_row) as conn:
        pending = conn.execute(
            """
            select p.id as prediction_id, p.ts as prediction_ts, p.equipment_id,
                   p.failure_probability, p.severity, p.days_until_failure, p.model_version
            from ops.predictions p
            where p.severity in ('HIGH', 'CRITICAL') and p.predicted_at > now() - %s
              and not exists (select 1 from ops.alert_prediction_log l
                              where l.prediction_id = p.id and l.prediction_ts = p.ts)
            order by p.ts, p.id
            limit %s
            """,
            (lookback, limit),
        ).fetchall()
    return [process_prediction(dict(row), settings, recipients) for row in pending]


def _task_line(conn: psycopg.Connection[DictRow], task_id: int | None) -> str | None:
    if task_id is None:
        return None
    row = one(
        conn.execute(
            "select id, task_type, priority, scheduled_date from ops.maintenance_tasks "
            "where id = %s",
            (task_id,),
        )
    )
    return (
        f"#{row['id']} {row['task_type']}, priority {row['priority']}, "
        f"scheduled {row['scheduled_date']:%Y-%m-%d %H:%M %Z}"
    )


@dataclass(frozen=True)
class EscalationReport:
    escalated: list[int]
    notifications: int


def escalate_unacknowledged(
    settings: Settings | None = None,
    recipients: RecipientsConfig | None = None,
    now: datetime | None = None,
) -> EscalationReport:
    """CRITICAL alerts still open (not acknowledged) `escalation_delay_min` after their last
    notification go to the next recipient group. Acknowledging an alert stops this."""
    settings = settings or get_settings()
    recipients = recipients or load_recipients(settings=settings)
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(minutes=settings.alerting.escalation_delay_min)
    escalated: list[int] = []
    written = 0
    with connect(Role.ALERTING, settings, row_factory=dict_row) as conn, conn.transaction():
        due = conn.execute(
            """
            select a.*, p.failure_probability, p.days_until_failure, p.explanation,
                   p.remaining_life, p.life_unit, p.remaining_life_beyond, p.assessment,
                   p.assessment_reason,
                   coalesce(e.equipment_type, 'unknown') as equipment_type,
                   coalesce(e.site, 'unknown') as site
            from ops.alerts a
            left join ops.predictions p on p.id = a.prediction_id and p.ts = a.prediction_ts
            left join raw.equipment e on e.equipment_id = a.equipment_id
            where a.status = 'open' and a.severity = 'CRITICAL'
              and coalesce(a.last_notified_at, a.created_at) <= %s
            order by a.id
            for update of a skip locked
            """,
            (cutoff,),
        ).fetchall()
        for alert in due:
            level = alert["escalation_level"] + 1
            conn.execute(
                "update ops.alerts set escalation_level = %s, last_notified_at = %s,"
                " updated_at = %s where id = %s",
                (level, now, now, alert["id"]),
            )
            _audit(
                conn,
                "alert.escalate",
                alert["id"],
                {"level": level, "role": recipients.role_for_level(level)},
            )
            notice = AlertNotice(
                alert_id=alert["id"],
                equipment_id=alert["equipment_id"],
                equipment_type=alert["equipment_type"],
                site=alert["site"],
                severity=alert["severity"],
                failure_probability=alert["failure_probability"] or 0.0,
                days_until_failure=alert["days_until_failure"],
                message=alert["message"],
                event="alert.unacknowledged",
                escalation_level=level,
                top_sensors=list(alert["explanation"] or []),
                **_prediction_facts(alert),
            )
            written += enqueue_alert_notifications(
                conn, notice, recipients.for_alert(alert["site"], level), now, settings
            )
            escalated.append(alert["id"])
    return EscalationReport(escalated, written)


def auto_resolve(settings: Settings | None = None, now: datetime | None = None) -> list[int]:
    """Resolve alerts whose maintenance task was completed, or (when enabled) whose equipment
    has had only LOW/MEDIUM predictions for `auto_resolve_healthy_hours`."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    resolved = []
    with connect(Role.ALERTING, settings) as conn, conn.transaction():
        done = conn.execute(
            """
            select distinct on (a.id) a.id, t.id, t.outcome
            from ops.alerts a join ops.maintenance_tasks t on t.alert_id = a.id
            where a.status <> 'resolved' and t.status = 'completed'
              and not exists (select 1 from ops.maintenance_tasks o where o.alert_id = a.id
                              and o.status in ('scheduled', 'in_progress'))
            order by a.id, t.completed_date desc
            """
        ).fetchall()
        for alert_id, task_id, outcome in done:
            conn.execute(
                "select ops.resolve_alert(%s, %s, %s)",
                (
                    alert_id,
                    "emps-auto-resolve",
                    f"maintenance task #{task_id} completed: {outcome}",
                ),
            )
            resolved.append(alert_id)
        hours = settings.alerting.auto_resolve_healthy_hours
        if hours > 0:
            since = now - timedelta(hours=hours)
            healthy = conn.execute(
                """
                select a.id from ops.alerts a
                where a.status <> 'resolved' and a.updated_at <= %(since)s
                  and exists (select 1 from ops.predictions p
                              where p.equipment_id = a.equipment_id and p.ts > %(since)s)
                  and not exists (select 1 from ops.predictions p
                                  where p.equipment_id = a.equipment_id and p.ts > %(since)s
                                    and p.severity in ('HIGH', 'CRITICAL'))
                """,
                {"since": since},
            ).fetchall()
            for (alert_id,) in healthy:
                if alert_id in resolved:
                    continue
                conn.execute(
                    "select ops.resolve_alert(%s, %s, %s)",
                    (alert_id, "emps-auto-resolve", f"no HIGH/CRITICAL prediction for {hours} h"),
                )
                resolved.append(alert_id)
    return resolved
