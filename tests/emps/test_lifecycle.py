"""Alert and maintenance-task lifecycle functions: transitions, who and when, audit trail. They
name a person, so only the owner (the CLI on the server) calls them directly."""

from __future__ import annotations

import psycopg
import pytest

from emps.db import Role, connect


@pytest.fixture
def alert_id(db) -> int:
    with connect(Role.OWNER, db) as conn:
        conn.execute("insert into raw.equipment values ('GEN-0007', 'generator', 'ALPHA')")
        return conn.execute(
            "insert into ops.alerts (equipment_id, severity, message) "
            "values ('GEN-0007', 'CRITICAL', 'bearing wear') returning id"
        ).fetchone()[0]


def test_acknowledge_then_resolve_records_who_and_audits(db, alert_id):
    """An open alert can be acknowledged then resolved; each step is stamped and audited."""
    with connect(Role.OWNER, db) as conn:
        conn.execute("select ops.acknowledge_alert(%s, 'tech.jones', 'on my way')", (alert_id,))
        conn.execute("select ops.resolve_alert(%s, 'tech.jones', 'bearing replaced')", (alert_id,))
        row = conn.execute(
            "select status, acknowledged_by, resolved_by, resolution_note, "
            "acknowledged_at <= resolved_at from ops.alerts where id = %s",
            (alert_id,),
        ).fetchone()
        assert row == ("resolved", "tech.jones", "tech.jones", "bearing replaced", True)
        actions = [
            r[0] for r in conn.execute("select action from ops.audit_log order by id").fetchall()
        ]
        assert actions == ["alert.acknowledge", "alert.resolve"]


def test_acknowledging_twice_is_refused_with_a_clear_message(db, alert_id):
    """A second acknowledgement says the alert is already acknowledged."""
    with connect(Role.OWNER, db) as conn:
        conn.execute("select ops.acknowledge_alert(%s, 'a')", (alert_id,))
        with pytest.raises(psycopg.errors.CheckViolation, match="already acknowledged"):
            conn.execute("select ops.acknowledge_alert(%s, 'b')", (alert_id,))


def test_task_create_reschedule_complete_with_outcome(db, alert_id):
    """A task is created for an alert, moved, and completed with the outcome the model learns from."""
    with connect(Role.OWNER, db) as conn:
        task = conn.execute(
            "select (ops.create_maintenance_task('GEN-0007', 'corrective', 1, now() + interval '1 day',"
            " 'planner', %s)).id",
            (alert_id,),
        ).fetchone()[0]
        conn.execute(
            "select ops.reschedule_maintenance_task(%s, now() + interval '2 days', 'planner')",
            (task,),
        )
        conn.execute(
            "select ops.complete_maintenance_task(%s, 'fault_found', 'tech.jones', 'worn bearing')",
            (task,),
        )
        status, outcome = conn.execute(
            "select status, outcome from ops.maintenance_tasks where id = %s", (task,)
        ).fetchone()
        assert (status, outcome) == ("completed", "fault_found")
        with pytest.raises(psycopg.errors.CheckViolation, match="not one of"):
            conn.execute("select ops.complete_maintenance_task(%s, 'fixed it', 'x')", (task,))


def test_reader_cannot_call_lifecycle_functions(db, alert_id):
    """The dashboard's read-only role cannot acknowledge an alert."""
    with connect(Role.READER, db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select ops.acknowledge_alert(%s, 'viewer')", (alert_id,))
