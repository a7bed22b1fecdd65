"""Every read the dashboard's pages, the API's read routes and the reports make comes from a dbt
mart: the SQL they run is captured as it goes to the database and the relations it names are
listed; a raw or ops table read outside the write paths fails."""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import psycopg
import pytest
import yaml

from emps import actions, queries
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT, Settings

# Code that may name raw and ops tables: it writes, or checks who is signed in.
WRITE_PATHS = {
    "emps/actions.py": "the dashboard's and the API's audited writes (ops.user_* functions)",
    "emps/users.py": "sign-in and session checks",
    "emps/api/people.py": "API token checks",
    "emps/api/app.py": "the API's own service (device keys, ingest requests)",
    # No mart can serve it: the tables hold the API's credentials, and no role that builds or
    # reads marts may read them (test_the_device_registry_is_read_by_the_owner_only).
    "emps/api/devices.py": "the device and key registry, the owner's `emps devices` (CLI only)",
    "emps/alerting/outbox.py": "queues the daily report's mail",
    "emps/dashboard/session.py": "the dashboard's sign-in gate",
}
# Frames that only pass a query on: the read is attributed to their caller.
PASS_THROUGH = {"emps/queries.py:frame", "emps/queries.py:row_dicts", "emps/db.py:*"}
RELATION = re.compile(r"\b(raw|ops|analytics)\.([a-z_][a-z0-9_]*)\b(?!\s*\()", re.IGNORECASE)


@dataclass
class Captured:
    """The relations each caller's SQL named: {caller: {"raw.equipment", ...}}."""

    reads: dict[str, set[str]] = field(default_factory=dict)

    def add(self, caller: str, text: str) -> None:
        names = {f"{s.lower()}.{t.lower()}" for s, t in RELATION.findall(text)}
        self.reads.setdefault(caller, set()).update(names)

    def raw_or_ops(self) -> dict[str, set[str]]:
        return {
            caller: found
            for caller, names in self.reads.items()
            if (found := {n for n in names if not n.startswith("analytics.")})
        }

    def marts(self) -> set[str]:
        """The analytics relations read by anyone."""
        return {n for names in self.reads.values() for n in names if n.startswith("analytics.")}

    def violations(self) -> dict[str, set[str]]:
        """raw/ops reads by callers that are not write paths."""
        return {
            caller: names
            for caller, names in self.raw_or_ops().items()
            if caller.partition(":")[0] not in WRITE_PATHS
        }


def _caller() -> str | None:
    """`path:function` of the innermost project frame that is not a pass-through; None for the
    tests' own setup."""
    frame = sys._getframe(2)
    root = str(PROJECT_ROOT) + "/"
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(root) and "/.venv/" not in filename:
            path = filename[len(root) :].removeprefix("src/")  # src/emps/x.py as emps/x.py
            name = f"{path}:{frame.f_code.co_name}"
            if path.startswith("tests/"):
                return None
            if name not in PASS_THROUGH and f"{path}:*" not in PASS_THROUGH:
                return name
        frame = frame.f_back
    return None


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """Every statement psycopg sends from now on, by the code that sent it."""
    capture = Captured()

    def wrap(cls: type) -> None:
        original = cls.execute

        def execute(self, query, *args, **kwargs):
            caller = _caller()
            if caller is not None:
                text = query if isinstance(query, str | bytes) else query.as_string(self)
                capture.add(caller, text.decode() if isinstance(text, bytes) else text)
            return original(self, query, *args, **kwargs)

        monkeypatch.setattr(cls, "execute", execute)

    for cls in (psycopg.Cursor, psycopg.AsyncCursor):
        wrap(cls)
    yield capture


def query_calls(fleet, settings: Settings) -> dict[str, Callable[[], object]]:
    """One call of every read in emps.queries, on the seeded fleet."""
    start, end = fleet.now - timedelta(days=30), fleet.now + timedelta(hours=1)
    return {
        "sites": lambda: queries.sites(settings),
        "equipment_types": lambda: queries.equipment_types(settings),
        "equipment_ids": lambda: queries.equipment_ids(settings),
        "fleet_health": lambda: queries.fleet_health(["ALPHA"], settings=settings, limit=3),
        "fleet_summary": lambda: queries.fleet_summary(["ALPHA"], settings=settings),
        "activity_summary": lambda: queries.activity_summary(settings),
        "thresholds": lambda: queries.thresholds(settings),
        "thresholds_table": lambda: queries.thresholds_table(settings),
        "equipment_health": lambda: queries.equipment_health("GEN-0001", settings),
        "envelopes": lambda: queries.envelopes("generator", settings),
        "sensor_trend": lambda: queries.sensor_trend("GEN-0001", start, end, settings),
        "prediction_history": lambda: queries.prediction_history("GEN-0001", start, end, settings),
        "latest_readings": lambda: queries.latest_readings("GEN-0001", 3, settings),
        "latest_prediction": lambda: queries.latest_prediction("GEN-0001", settings),
        "maintenance_history": lambda: queries.maintenance_history("GEN-0001", settings),
        "alerts": lambda: queries.alerts(sites=["ALPHA"], since=start, settings=settings),
        "open_alerts": lambda: queries.open_alerts(settings),
        "notification_backlog": lambda: queries.notification_backlog(settings),
        "maintenance_schedule": lambda: queries.maintenance_schedule(settings=settings),
        "tasks_due": lambda: queries.tasks_due(end, settings),
        "tasks": lambda: queries.tasks(start, end, settings=settings),
        "alert_statistics": lambda: queries.alert_statistics(start, end, settings),
        "failures_caught": lambda: queries.failures_caught(start, end, settings),
        "model_promotions": lambda: queries.model_promotions(settings),
        "ingest_volume": lambda: queries.ingest_volume(start, end, settings),
        "ingest_files": lambda: queries.ingest_files(settings=settings),
        "quarantined_rows": lambda: queries.quarantined_rows(settings=settings),
        "conflicts": lambda: queries.conflicts(settings=settings),
        "landing_ignored": lambda: queries.landing_ignored(settings),
        "archived_records": lambda: queries.archived_records(settings),
        "operations_alerts": lambda: queries.operations_alerts(settings=settings),
        "users": lambda: queries.users(settings),
        "audit_log": lambda: queries.audit_log(settings=settings),
    }


def exposed(*consumers: str) -> set[str]:
    """The marts dbt's exposures (models/marts/__exposures.yml) say these consumers read."""
    path = PROJECT_ROOT / "dbt_project" / "models" / "marts" / "__exposures.yml"
    exposures = {e["name"]: e for e in yaml.safe_load(path.read_text("utf-8"))["exposures"]}
    refs = (
        re.fullmatch(r"ref\('(\w+)'\)", d) for c in consumers for d in exposures[c]["depends_on"]
    )
    return {f"analytics.{ref[1]}" for ref in refs if ref}


def _public_reads() -> set[str]:
    helpers = {"frame", "row_dicts", "default_range"}
    return {
        name
        for name, value in inspect.getmembers(queries, inspect.isfunction)
        if value.__module__ == queries.__name__ and not name.startswith("_") and name not in helpers
    }


def test_every_query_reads_marts_only(fleet, db, captured):
    """Each read in emps.queries names only analytics marts, and only marts an exposure lists."""
    calls = query_calls(fleet, db)
    assert set(calls) == _public_reads(), "a read in emps.queries is not exercised here"
    for call in calls.values():
        call()
    assert captured.violations() == {}
    assert captured.marts() <= exposed("dashboard", "http_api", "daily_maintenance_report")


def test_the_capture_catches_a_raw_or_ops_read(db, captured):
    """A read of an ops table from outside the write paths shows as a violation (the check can
    fail): the notification outbox read straight, as the alerting code does for the recipient
    of the oldest waiting notification."""
    from emps.alerting.backlog import backlog

    with connect(Role.ALERTING, db) as conn:
        backlog(conn, detailed=True)
    assert captured.violations() == {"emps/alerting/backlog.py:backlog": {"ops.notifications"}}


def test_the_device_registry_is_read_by_the_owner_only(db, captured):
    """`emps devices list` reads the device and key tables themselves, as the owner: neither the
    role dbt builds marts as nor the dashboard's reader may read them, so no mart could list
    the devices without handing their key prefixes to every dashboard user."""
    from emps.api.devices import add_device, list_devices

    with connect(Role.OWNER, db, autocommit=True) as conn:
        new = add_device(conn, "gateway-1", ["GEN-0001"], "test")
        listed = list_devices(conn)
    assert [(d["device_id"], d["keys"]) for d in listed] == [("gateway-1", [new.prefix])]
    assert captured.reads["emps/api/devices.py:list_devices"] == {"ops.devices", "ops.device_keys"}
    assert captured.violations() == {}
    for role in (Role.WRITER, Role.READER):
        with connect(role, db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select 1 from ops.devices")


def test_reports_read_marts_only(fleet, db, captured, tmp_path):
    """The fleet, site and equipment reports (PDF and CSV) and the daily maintenance mail read
    marts only; the daily mail still lists the open alerts and due tasks."""
    from emps.alerting.recipients import RecipientsConfig
    from emps.daily_report import queue_daily_report
    from emps.reports import build_report

    start, end = fleet.now - timedelta(days=7), fleet.now + timedelta(minutes=1)
    for scope in ("fleet", "site:ALPHA", "equipment:GEN-0001"):
        report = build_report(scope, start, end, settings=db)
        assert report.pdf_bytes().startswith(b"%PDF") and report.csv_bytes()
    # An hour on, the inspection due a day after the seed falls in the next 24 h; the task three
    # days out does not.
    daily = queue_daily_report(db, RecipientsConfig(people=()), now=fleet.now + timedelta(hours=1))
    assert captured.violations() == {}
    assert {"analytics.mart_alerts", "analytics.mart_maintenance_schedule"} <= captured.marts()
    assert captured.marts() <= exposed("daily_maintenance_report")
    assert (daily.open_alerts, daily.tasks) == (2, 1)


def test_api_read_routes_read_marts_only(fleet, db, captured):
    """The API's read routes (served in this process) read marts only."""
    from fastapi.testclient import TestClient

    from emps.api.app import create_app
    from emps.users import mint_token

    with connect(Role.OWNER, db, autocommit=True) as conn:
        token = mint_token(conn, "viewer", "read paths", 1)[0]
    reads = [
        "/api/v1/sensors/GEN-0001/latest",
        "/api/v1/predictions/GEN-0001/latest?history_days=7",
        "/api/v1/alerts?site=ALPHA",
        "/api/v1/dashboard/overview",
        "/api/v1/dashboard/equipment/GEN-0001/details",
        "/api/v1/analytics/alert-statistics",
    ]
    with TestClient(create_app(db)) as client:
        for path in reads:
            answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200, (path, answer.text)
    assert captured.violations() == {}
    assert {"analytics.mart_alerts", "analytics.mart_sensor_readings"} <= captured.marts()
    assert captured.marts() <= exposed("http_api")


PAGES = sorted(p.name for p in (PROJECT_ROOT / "src" / "emps" / "dashboard" / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_page_reads_marts_only(app, page, captured):
    """Each dashboard page, opened by an admin (who sees every section), reads marts only."""
    app("admin", f"pages/{page}", equipment="GEN-0001")
    assert captured.violations() == {}
    assert captured.reads, "nothing was captured: the page ran no query"
    assert captured.marts() <= exposed("dashboard")


def test_an_acknowledgement_shows_at_once(fleet, db, signed_in_as):
    """Acknowledging an alert shows on the alert list, the open-alert list and the activity
    counts at once: the marts over the ops tables are views, not tables a build refreshes."""
    before = queries.activity_summary(db)
    actions.acknowledge_alert(signed_in_as("tech"), fleet.critical_alert, "on it", db)
    listed = queries.alerts(equipment_id="GEN-0001", settings=db).set_index("alert_id")
    assert listed.loc[fleet.critical_alert, "status"] == "acknowledged"
    assert listed.loc[fleet.critical_alert, "acknowledged_by"] == "tech"
    assert {a["alert_id"]: a["status"] for a in queries.open_alerts(db)}[
        fleet.critical_alert
    ] == "acknowledged"
    after = queries.activity_summary(db)
    assert after["alerts_unacknowledged"] == before["alerts_unacknowledged"] - 1
