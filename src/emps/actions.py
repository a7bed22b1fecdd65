"""What a signed-in dashboard user can change, checked here and again in the database.

Each action checks the user's role before it touches the database, then calls one of the
`ops.user_*` / `ops.admin_*` functions (migration 0101) as the narrow `emps_operator` role with the
user's session token, never their name: the database finds who holds the token, re-reads their
role and active flag, runs the audited lifecycle functions of migration 0004, and stamps the
user's role on the audit row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from emps.db import one
from emps.settings import Settings
from emps.users import User, UserError, connect_operator, hash_password, parse_role
from emps.users import validate_username as _validate_username

TASK_TYPES = ("inspection", "corrective", "preventive", "repair")
OUTCOMES = ("fault_found", "no_fault_found", "failed_before_service")
MAX_NOTE_LENGTH = 2000


class NotAllowed(PermissionError):
    """The signed-in user's role may not do this."""


class ActionFailed(RuntimeError):
    """The database refused the change (wrong state, unknown id, ...); the message says why."""


class NotFound(ActionFailed):
    """The alert, task, equipment or user named does not exist."""


class SessionRefused(ActionFailed):
    """The database refused the session: ended, expired, revoked, or the role may not do this."""


def _token(user: User) -> str:
    if not user.token:
        raise ActionFailed(f"{user.username} has no session: sign in again")
    return user.token


def _require_actor(user: User) -> None:
    if not user.role.can_act:
        raise NotAllowed(
            f"{user.username} is a {user.role.value}: only Technicians and Admins can change "
            "alerts and maintenance tasks"
        )


def _require_admin(user: User) -> None:
    if not user.role.can_administer:
        raise NotAllowed(f"{user.username} is a {user.role.value}: only Admins can do this")


def _note(note: str | None) -> str | None:
    note = (note or "").strip()
    if len(note) > MAX_NOTE_LENGTH:
        raise ActionFailed(f"the note has {len(note)} characters; keep it under {MAX_NOTE_LENGTH}")
    return note or None


def _call(sql: str, params: tuple, settings: Settings | None) -> dict[str, Any]:
    """The row of an ops.* function (each returns one, or raises), by column name."""
    try:
        with connect_operator(settings) as conn:
            return one(conn.cursor(row_factory=dict_row).execute(sql, params))
    except psycopg.errors.RaiseException as exc:
        raise ActionFailed(exc.diag.message_primary or str(exc)) from None
    except psycopg.errors.NoDataFound as exc:
        raise NotFound(exc.diag.message_primary or str(exc)) from None
    except psycopg.errors.ForeignKeyViolation as exc:  # e.g. a task naming an unknown alert
        raise NotFound(exc.diag.message_detail or str(exc)) from None
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SessionRefused(exc.diag.message_primary or str(exc)) from None
    except psycopg.errors.CheckViolation as exc:
        raise ActionFailed(exc.diag.message_primary or str(exc)) from None
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "maintenance_one_open_per_alert_idx":
            raise ActionFailed(
                "this alert already has an open maintenance task: reschedule that one instead"
            ) from None
        raise ActionFailed(f"that already exists ({exc.diag.message_detail})") from None


def acknowledge_alert(
    user: User, alert_id: int, note: str | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    _require_actor(user)
    return _call(
        "select * from ops.user_acknowledge_alert(%s, %s, %s)",
        (_token(user), int(alert_id), _note(note)),
        settings,
    )


def resolve_alert(
    user: User, alert_id: int, note: str | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    _require_actor(user)
    return _call(
        "select * from ops.user_resolve_alert(%s, %s, %s)",
        (_token(user), int(alert_id), _note(note)),
        settings,
    )


def create_task(
    user: User,
    equipment_id: str,
    task_type: str,
    priority: int,
    scheduled_date: datetime,
    alert_id: int | None = None,
    notes: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    _require_actor(user)
    if task_type not in TASK_TYPES:
        raise ActionFailed(f"task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    if scheduled_date.tzinfo is None:
        raise ActionFailed("the scheduled date needs a time zone")
    return _call(
        "select * from ops.user_create_maintenance_task(%s, %s, %s, %s, %s, %s, %s)",
        (
            _token(user),
            equipment_id.strip(),
            task_type,
            int(priority),
            scheduled_date,
            alert_id,
            _note(notes),
        ),
        settings,
    )


def reschedule_task(
    user: User,
    task_id: int,
    scheduled_date: datetime,
    note: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    _require_actor(user)
    if scheduled_date.tzinfo is None:
        raise ActionFailed("the new date needs a time zone")
    return _call(
        "select * from ops.user_reschedule_maintenance_task(%s, %s, %s, %s)",
        (_token(user), int(task_id), scheduled_date, _note(note)),
        settings,
    )


def complete_task(
    user: User,
    task_id: int,
    outcome: str,
    note: str | None = None,
    settings: Settings | None = None,
    completed_at: datetime | None = None,
) -> dict[str, Any]:
    """Complete a task, at the time the work was done (default now): failed_before_service
    records the failure it found, fault_found a prevented failure."""
    _require_actor(user)
    if outcome not in OUTCOMES:
        raise ActionFailed(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    return _call(
        "select * from ops.user_complete_maintenance_task(%s, %s, %s, %s, %s)",
        (_token(user), int(task_id), outcome, _note(note), completed_at),
        settings,
    )


def record_failure(
    user: User,
    equipment_id: str,
    failed_at: datetime,
    failure_mode: str | None = None,
    note: str | None = None,
    repaired_at: datetime | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Record a failure as it happened (Technicians and Admins, audited): the hours before it
    become positive examples at the model's next training."""
    _require_actor(user)
    return _call(
        "select * from ops.user_record_failure(%s, %s, %s, %s, %s, %s)",
        (_token(user), equipment_id, failed_at, _note(failure_mode), _note(note), repaired_at),
        settings,
    )


def save_user(
    admin: User,
    username: str,
    role: str,
    display_name: str = "",
    password: str | None = None,
    active: bool = True,
    settings: Settings | None = None,
) -> None:
    """Add a user or change one (a blank password keeps the current one). A password set for
    someone else is temporary: they choose their own at their next sign-in."""
    _require_admin(admin)
    try:
        username = _validate_username(username)
        user_role = parse_role(role)
        password_hash = hash_password(password) if password else None
    except UserError as exc:
        raise ActionFailed(str(exc)) from None
    _call(
        "select ops.admin_save_user(%s, %s, %s, %s, %s, %s)",
        (_token(admin), username, user_role.value, display_name.strip(), password_hash, active),
        settings,
    )


def set_threshold(admin: User, key: str, value: float, settings: Settings | None = None) -> None:
    _require_admin(admin)
    _call(
        "select ops.admin_set_threshold(%s, %s, %s)", (_token(admin), key, float(value)), settings
    )


def revoke_sessions(admin: User, username: str, settings: Settings | None = None) -> int:
    """End every session and API token of a user (their next page load asks them to sign in)."""
    _require_admin(admin)
    try:
        username = _validate_username(username)
    except UserError as exc:
        raise ActionFailed(str(exc)) from None
    row = _call(
        "select ops.admin_revoke_tokens(%s, %s) as revoked", (_token(admin), username), settings
    )
    return int(row["revoked"]) if row else 0


# -- the quarantine (the Data quality page) ---------------------------------------------------


def accept_conflict(
    admin: User, row_id: int, note: str | None = None, settings: Settings | None = None
) -> int:
    """The received reading of a conflict replaces the stored one (audited); the next ingest run
    rebuilds the features it feeds and rescores them. Returns the correction's id."""
    _require_admin(admin)
    row = _call(
        "select ops.admin_accept_conflict(%s, %s, %s) as correction",
        (_token(admin), int(row_id), _note(note)),
        settings,
    )
    return int(row["correction"])


def dismiss_conflict(
    admin: User, row_id: int, note: str | None = None, settings: Settings | None = None
) -> None:
    """Keep the stored reading and close the conflict (audited)."""
    _require_admin(admin)
    _call(
        "select ops.admin_dismiss_conflict(%s, %s, %s)",
        (_token(admin), int(row_id), _note(note)),
        settings,
    )


def retry_quarantined(
    admin: User, row_ids: list[int], note: str | None = None, settings: Settings | None = None
) -> int:
    """Validate quarantined rows again at the next ingest run (audited); how many were queued."""
    _require_admin(admin)
    row = _call(
        "select ops.admin_retry_quarantined(%s, %s, %s) as queued",
        (_token(admin), [int(i) for i in row_ids], _note(note)),
        settings,
    )
    return int(row["queued"])
