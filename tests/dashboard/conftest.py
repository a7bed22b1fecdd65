"""Dashboard fixtures: the contract marts, a small seeded fleet, users of each role, AppTest."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT, Settings
from emps.users import User, add_user, sign_in
from tests.dashboard_state import refresh_dashboard_state

APP = PROJECT_ROOT / "src" / "emps" / "dashboard" / "streamlit_app.py"
PASSWORD = "correct-horse-battery"
SCRIPT_MESSAGE = "<script>alert('pwned')</script> bearing temperature high"
HTML_NOTE = '<img src=x onerror="alert(1)"><b id="xss">bold</b>'


@dataclass
class Fleet:
    script_message = SCRIPT_MESSAGE
    html_note = HTML_NOTE
    password = PASSWORD
    now: datetime
    critical_alert: int
    acknowledged_alert: int
    resolved_alert: int
    upcoming_task: int


def _sensor_expression(sensor: str, low: float, high: float, trend: float) -> str:
    # Middle of the normal band with a daily wave; `trend` drifts it up over the series.
    mid, half = (low + high) / 2, (high - low) / 2
    return (
        f"{mid} + {half * 0.4} * sin(extract(epoch from g) / 13750.0) "
        f"+ {trend * half} * (extract(epoch from g - %(start)s) / extract(epoch from %(now)s - %(start)s))"
    )


def seed_fleet(conn: psycopg.Connection) -> Fleet:
    """Five equipment on three sites with readings, predictions, alerts, tasks, ingest history."""
    now = datetime.now(UTC).replace(microsecond=0)
    catalog = load_catalog()
    equipment = [
        ("GEN-0001", "generator", "ALPHA", 1.5, 0.92),
        ("GEN-0002", "generator", "ALPHA", 0.0, 0.08),
        ("RAD-0001", "radar", "BRAVO", 0.5, 0.7),
        ("PMP-0001", "pump", "BRAVO", 0.2, 0.4),
        ("VEH-0001", "vehicle_engine", "CHARLIE", None, None),  # silent, never scored
    ]
    with conn.transaction():
        conn.execute("delete from ops.users")
        conn.execute(
            "update ops.thresholds set value = case key when 'severity_medium' then 0.30 "
            "when 'severity_high' then 0.60 when 'severity_critical' then 0.85 else 15 end"
        )
        for equipment_id, etype, site, trend, probability in equipment:
            conn.execute(
                "insert into raw.equipment (equipment_id, equipment_type, site) values (%s, %s, %s)",
                (equipment_id, etype, site),
            )
            if trend is None:
                continue
            sensors = catalog.sensor_names
            expressions = ", ".join(
                _sensor_expression(s, *catalog.envelope(etype, s), trend) for s in sensors
            )
            conn.execute(
                f"insert into raw.sensor_readings (equipment_id, ts, {', '.join(sensors)}) "  # noqa: S608 - catalog names
                f"select %(id)s, g, {expressions} "
                "from generate_series(%(start)s, %(now)s, interval '10 minutes') g",
                {"id": equipment_id, "start": now - timedelta(days=2), "now": now},
            )
            conn.execute(
                """
                insert into ops.predictions (equipment_id, ts, predicted_at, failure_probability,
                    health_score, severity, days_until_failure, model_version, explanation)
                select %(id)s, g, g, p, round(100 * (1 - p)),
                       case when p >= 0.85 then 'CRITICAL' when p >= 0.6 then 'HIGH'
                            when p >= 0.3 then 'MEDIUM' else 'LOW' end,
                       case when p >= 0.3 then 10 * (1 - p) end, '3', %(explanation)s
                from (select g, least(%(p)s, %(p)s * (0.5 + 0.5 * extract(epoch from g - %(start)s)
                        / extract(epoch from %(now)s - %(start)s))) as p
                      from generate_series(%(start)s, %(now)s, interval '1 hour') g) s
                """,
                {
                    "id": equipment_id,
                    "p": probability,
                    "start": now - timedelta(days=2),
                    "now": now,
                    "explanation": Jsonb(
                        [
                            {
                                "feature": "vibration_slope_w3",
                                "label": "vibration trend over 24 h",
                                "sensor": "vibration",
                                "contribution": 0.21,
                                "value": 1.3,
                            },
                            {
                                "feature": "temperature_dev_lag",
                                "label": "temperature vs own baseline",
                                "sensor": "temperature",
                                "contribution": 0.08,
                                "value": 2.1,
                            },
                        ]
                    ),
                },
            )

        def alert(equipment_id, severity, status, created, acked=None, resolved=None, msg=None):
            return conn.execute(
                """
                insert into ops.alerts (equipment_id, severity, message, status, created_at,
                    acknowledged_at, acknowledged_by, resolved_at, resolved_by)
                values (%s, %s, %s, %s, %s, %s, case when %s::timestamptz is not null
                        then 'tech' end, %s, case when %s::timestamptz is not null then 'tech' end)
                returning id
                """,
                (
                    equipment_id,
                    severity,
                    msg or f"{severity} failure risk on {equipment_id}",
                    status,
                    created,
                    acked,
                    acked,
                    resolved,
                    resolved,
                ),
            ).fetchone()[0]

        critical = alert(
            "GEN-0001", "CRITICAL", "open", now - timedelta(hours=2), msg=SCRIPT_MESSAGE
        )
        acknowledged = alert(
            "RAD-0001",
            "HIGH",
            "acknowledged",
            now - timedelta(hours=5),
            now - timedelta(hours=4, minutes=48),
        )
        resolved = alert(
            "PMP-0001",
            "MEDIUM",
            "resolved",
            now - timedelta(days=3),
            now - timedelta(days=3) + timedelta(minutes=30),
            now - timedelta(days=2),
        )
        upcoming = conn.execute(
            "insert into ops.maintenance_tasks (equipment_id, alert_id, task_type, priority, "
            "scheduled_date, notes) values ('GEN-0001', %s, 'inspection', 1, %s, %s) returning id",
            (critical, now + timedelta(days=1), HTML_NOTE),
        ).fetchone()[0]
        conn.execute(
            "insert into ops.maintenance_tasks (equipment_id, task_type, priority, scheduled_date) "
            "values ('RAD-0001', 'preventive', 3, %s)",
            (now + timedelta(days=3),),
        )
        conn.execute(
            "insert into ops.maintenance_tasks (equipment_id, task_type, priority, scheduled_date, "
            "status, completed_date, outcome) values ('PMP-0001', 'repair', 2, %s, 'completed', %s, "
            "'fault_found')",
            (now - timedelta(days=2), now - timedelta(days=1)),
        )
        conn.execute(
            "insert into raw.failure_events (equipment_id, failed_at, failure_mode, source) values "
            "('PMP-0001', %s, 'seal_leak', 'operator'), ('GEN-0002', %s, 'bearing', 'operator')",
            (now - timedelta(days=2, hours=1), now - timedelta(days=5)),
        )
        files = [
            ("drop-0001.csv", "loaded", 100, 100, 0, 0),
            ("drop-0002.csv", "partial", 100, 90, 5, 5),
            ("drop-0003.json", "quarantined", 0, 0, 0, 0),
        ]
        for i, (name, status, total, loaded, dup, quarantined) in enumerate(files):
            file_id = conn.execute(
                "insert into raw.ingest_files (file_name, sha256, size_bytes, format, received_at, "
                "finished_at, status, rows_total, rows_loaded, rows_duplicate, rows_quarantined, "
                "error) values (%s, %s, 1000, 'csv', %s, %s, %s, %s, %s, %s, %s, %s) returning id",
                (
                    name,
                    f"{i:064d}",
                    now - timedelta(hours=3 - i),
                    now - timedelta(hours=3 - i),
                    status,
                    total,
                    loaded,
                    dup,
                    quarantined,
                    "not valid JSON" if status == "quarantined" else None,
                ),
            ).fetchone()[0]
            if status == "partial":
                conn.execute(
                    "insert into raw.quarantined_rows (ingest_file_id, file_name, row_number, "
                    "equipment_id, reasons, raw_values) values (%s, %s, 4, 'GEN-0001', "
                    "array['vibration: -3 is below the valid range 0..100'], %s), "
                    "(%s, %s, 9, 'GEN-0002', array['timestamp: not a date'], %s)",
                    (
                        file_id,
                        name,
                        Jsonb({"vibration": "-3"}),
                        file_id,
                        name,
                        Jsonb({"timestamp": HTML_NOTE}),
                    ),
                )
        conn.execute(
            "insert into ops.model_promotions (model_name, alias, from_version, to_version, "
            "promoted_by, promoted_at, reason, metrics) values "
            "('equipment-failure', 'champion', null, '2', 'admin', %s, 'first model', %s), "
            "('equipment-failure', 'champion', '2', '3', 'admin', %s, 'better recall', %s)",
            (
                now - timedelta(days=20),
                Jsonb({"roc_auc": 0.88, "recall": 0.81}),
                now - timedelta(days=6),
                Jsonb({"roc_auc": 0.91, "recall": 0.86}),
            ),
        )
        # Low bcrypt cost: the tests check sign-in behaviour, not hashing strength.
        for username, role in (("admin", "Admin"), ("tech", "Technician"), ("viewer", "Viewer")):
            add_user(conn, username, role, PASSWORD, username.title(), rounds=4)
    return Fleet(now, critical, acknowledged, resolved, upcoming)


@pytest.fixture
def fleet(db: Settings, dashboard_marts: Settings) -> Fleet:
    with connect(Role.OWNER, db, autocommit=True) as conn:
        seeded = seed_fleet(conn)
    refresh_dashboard_state(db)
    return seeded


def signed_in(username: str) -> User:
    """A seeded user signed in with the real sign-in: they hold a session token."""
    user = sign_in(username, PASSWORD)
    assert user is not None, f"{username} could not sign in"
    return user


@pytest.fixture
def signed_in_as(fleet: Fleet) -> Callable[[str], User]:
    """signed_in_as("tech"): a seeded user holding a real session."""
    return signed_in


@pytest.fixture
def replay_champion(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, tmp_path):
    """A champion in a registry of the test's own and a stored history ending now whose
    backtest is known (dashboard_backtest.ReplayChampion); the environment points the
    dashboard (AppTest, or a served one started afterwards) at them."""
    from dashboard_backtest import ml_environment, seed_replay_champion

    from emps.ml.predict import forget_cached_models
    from emps.settings import get_settings

    for name, value in ml_environment(tmp_path / "mlflow").items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    forget_cached_models()
    yield seed_replay_champion(get_settings(), fleet.now)
    monkeypatch.undo()
    get_settings.cache_clear()
    forget_cached_models()


@pytest.fixture
def app(fleet: Fleet) -> Iterator[Callable]:
    """Open the dashboard in AppTest as a signed-in user, on a page: app("tech", "pages/alerts.py")."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    st.cache_data.clear()

    def open_page(username: str, page: str | None = None, **query) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.session_state["session_token"] = signed_in(username).token
        for key, value in query.items():
            at.query_params[key] = value
        at.run()
        if page:
            at.switch_page(page)
            at.run()
        assert not at.exception, at.exception
        return at

    yield open_page
    st.cache_data.clear()
