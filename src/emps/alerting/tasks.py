"""Maintenance tasks from alerts: CRITICAL -> corrective before the predicted failure, HIGH ->
inspection within N days, at most one open task per alert (ops.maintenance_tasks unique index)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from emps.domain import Severity
from emps.settings import Settings, get_settings

ACTOR = "emps-alerts"
# Corrective work is planned halfway to the predicted failure, and never more than a week out.
CORRECTIVE_MAX_LEAD = timedelta(days=7)


def priority_for(failure_probability: float) -> int:
    """1 (most urgent) .. 4 from the failure probability."""
    if failure_probability >= 0.95:
        return 1
    if failure_probability >= 0.85:
        return 2
    if failure_probability >= 0.60:
        return 3
    return 4


def scheduled_date_for(
    severity: Severity | str,
    days_until_failure: float | None,
    now: datetime,
    settings: Settings | None = None,
) -> datetime:
    """Before the predicted failure: corrective at half the remaining time (max a week, tomorrow
    when unknown); inspection within `inspection_within_days`, earlier if failure comes sooner."""
    settings = settings or get_settings()
    half_way = (
        None if days_until_failure is None else timedelta(days=max(days_until_failure, 0) / 2)
    )
    if Severity(severity) is Severity.CRITICAL:
        lead = timedelta(days=1) if half_way is None else min(half_way, CORRECTIVE_MAX_LEAD)
    else:
        lead = timedelta(days=settings.alerting.inspection_within_days)
        if half_way is not None:
            lead = min(lead, half_way)
    return now + lead


def task_type_for(severity: Severity | str) -> str:
    return "corrective" if Severity(severity) is Severity.CRITICAL else "inspection"


def open_task_for_alert(conn: psycopg.Connection[Any], alert_id: int) -> tuple | None:
    return (
        conn.cursor(row_factory=tuple_row)
        .execute(
            "select id, task_type, priority, scheduled_date from ops.maintenance_tasks"
            " where alert_id = %s and status in ('scheduled', 'in_progress')",
            (alert_id,),
        )
        .fetchone()
    )


def ensure_task_for_alert(
    conn: psycopg.Connection[Any],  # of any row type: its queries ask for tuples
    *,
    alert_id: int,
    equipment_id: str,
    severity: str,
    failure_probability: float,
    days_until_failure: float | None,
    now: datetime,
    settings: Settings | None = None,
) -> tuple[int, bool]:
    """The alert's open task, created (or upgraded to corrective on CRITICAL) as needed.

    Returns (task id, whether anything changed). Runs in the caller's transaction.
    """
    settings = settings or get_settings()
    wanted_type = task_type_for(severity)
    priority = priority_for(failure_probability)
    when = scheduled_date_for(severity, days_until_failure, now, settings)
    existing = open_task_for_alert(conn, alert_id)
    if existing is None:
        note = f"from alert #{alert_id}: {severity} at {failure_probability:.0%}"
        try:
            with conn.transaction():
                row = (
                    conn.cursor(row_factory=tuple_row)
                    .execute(
                        "select (ops.create_maintenance_task(%s, %s, %s, %s, %s, %s, %s)).id",
                        (equipment_id, wanted_type, priority, when, ACTOR, alert_id, note),
                    )
                    .fetchone()
                )
            assert row is not None  # the function returns the task it created
            return row[0], True
        except psycopg.errors.UniqueViolation:
            # Another run created it between our check and insert: use theirs.
            existing = open_task_for_alert(conn, alert_id)
            assert existing is not None  # the one whose insert beat ours
            return existing[0], False
    task_id, task_type, old_priority, old_when = existing
    if task_type == "inspection" and wanted_type == "corrective":
        new_when = min(old_when, when)
        new_priority = min(old_priority, priority)
        conn.execute(
            "update ops.maintenance_tasks set task_type = 'corrective', priority = %s,"
            " scheduled_date = %s, updated_at = now() where id = %s",
            (new_priority, new_when, task_id),
        )
        conn.execute(
            "select ops.record_audit(%s, 'task.upgrade', 'maintenance_task', %s, %s)",
            (
                ACTOR,
                str(task_id),
                Jsonb(
                    {
                        "alert_id": alert_id,
                        "from": "inspection",
                        "to": "corrective",
                        "priority": new_priority,
                        "scheduled_date": new_when.isoformat(),
                    }
                ),
            ),
        )
        return task_id, True
    return task_id, False
