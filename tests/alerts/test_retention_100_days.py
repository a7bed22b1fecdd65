"""A hundred days of a 50-equipment fleet under the daily cleanup, on a clock the test moves:
every table and folder stays within its retention, labels and open conflicts survive, nothing
lands in a DEFAULT partition, and archiving old alerts changes no Analytics count."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import sql

from emps import queries
from emps.alerting import archive
from emps.alerting.retention import cleanup
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.migrate import ensure_partitions
from emps.settings import Settings

DAYS = 100
EQUIPMENT = 50
PER_HOUR = 4  # predictions and readings per equipment and hour
RETENTION = {
    "alert_days": 30,
    "audit_days": 45,
    "notification_days": 20,
    "quarantine_days": 25,
    "ingest_ledger_days": 10,
    "prediction_detail_days": 35,
    "archive_days": 7,
    "reports_days": 14,
    "mailbox_days": 7,
}


@pytest.fixture
def fleet(db: Settings, dashboard_marts: Settings, tmp_path: Path) -> tuple[Settings, list[str]]:
    """Fifty machines of the catalog's first type; the clock's months only, none ahead yet."""
    settings = db.replace(
        home=tmp_path, retention=RETENTION, database={"partitions_months_ahead": 1}
    )
    kind = next(iter(load_catalog(settings.catalog_path).equipment_types))
    ids = [f"R{n:03d}" for n in range(EQUIPMENT)]
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site)"
            " select unnest(%s::text[]), %s, 'site-' || (random() * 3)::int",
            (ids, kind),
        )
        for table in ("raw.sensor_readings", "ops.predictions"):  # only the clock's months
            for (name,) in conn.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = %s::regclass and c.relname ~ '_y[0-9]{4}m[0-9]{2}$'",
                (table,),
            ).fetchall():
                schema = table.split(".")[0]
                conn.execute(f"alter table {table} detach partition {schema}.{name}")
                conn.execute(f"drop table {schema}.{name}")
        start = datetime.now(UTC) - timedelta(days=DAYS)
        ensure_partitions(conn, settings, start=start, end=start + timedelta(days=31))
    yield settings, ids
    with connect(Role.OWNER, db) as conn:  # the months the other tests expect
        ensure_partitions(conn, db)


def _live_one_day(conn, day: datetime, ids: list[str], n: int, home: Path) -> dict:
    """What a day of the fleet leaves behind; the failure of the day, if any, as (id, at)."""
    end = day + timedelta(days=1)
    step = timedelta(hours=1) / PER_HOUR
    conn.execute(
        "insert into raw.sensor_readings (equipment_id, ts)"
        " select e, t from unnest(%s::text[]) e, generate_series(%s, %s, %s) t",
        (ids, day, end - step, step),
    )
    conn.execute(
        "insert into ops.predictions (equipment_id, ts, failure_probability, health_score,"
        " severity, model_version)"
        " select e, t, p, (100 * (1 - p))::int, case when p > 0.6 then 'HIGH' else 'LOW' end, '1'"
        " from unnest(%s::text[]) e, generate_series(%s, %s, %s) t, lateral (select random() p) r",
        (ids, day, end - step, step),
    )
    files = conn.execute(
        "insert into raw.ingest_files (file_name, sha256, size_bytes, received_at, claimed_at,"
        " finished_at, status, rows_total, rows_loaded)"
        " select 'd' || %s || '-' || g || '.csv', md5(%s || '-' || g), 100, t, t, t, 'loaded', 4, 4"
        " from generate_series(0, 47) g, lateral (select %s + g * interval '30 minutes' t) x"
        " returning id",
        (n, n, day),
    ).fetchall()
    # Two HTTP ingest requests a day, one in the file that will hold the day's bad row.
    if n == 0:
        # (another test of the worker's session database may have added it already)
        conn.execute(
            "insert into ops.devices (device_id, created_by) values ('gateway-1', 'test')"
            " on conflict do nothing"
        )
    conn.execute(
        "insert into ops.api_ingest_requests (request_id, device_id, body_sha256, state,"
        " readings, file_name, first_row, last_row, created_at, accepted_at)"
        " select gen_random_uuid(), 'gateway-1', sha256(g::text::bytea), 'accepted', 2,"
        " 'd' || %s || '-' || g || '.csv', 1, 2, %s + g * interval '30 minutes',"
        " %s + g * interval '30 minutes' from generate_series(0, 1) g",
        (n, day, day),
    )
    # A bad row a day; on day 3 a conflict nobody resolves, on day 5 one an admin asks to retry.
    kind = "conflict" if n in (3, 6) else "invalid"
    conn.execute(
        "insert into raw.quarantined_rows (ingest_file_id, file_name, row_number, equipment_id,"
        " reasons, raw_values, quarantined_at, kind, retry_requested_at)"
        " values (%s, 'd' || %s, 2, %s, '{bad value}', '{}', %s, %s, %s)",
        (files[0][0], n, ids[n % EQUIPMENT], day, kind, day if n == 5 else None),
    )
    if n == 6:  # this conflict an admin resolves: it may go once old
        conn.execute(
            "update raw.quarantined_rows set resolution = 'dismissed' where kind ="
            " 'conflict' and file_name = 'd6'"
        )
    conn.execute(
        "insert into ops.audit_log (at, actor, action) select %s + g * interval '1 hour',"
        " 'admin', 'test.action' from generate_series(0, 9) g",
        (day,),
    )
    conn.execute(
        "insert into ops.notifications (channel, recipient, subject, body_text, dedupe_key,"
        " status, created_at, sent_at, event) values ('email', 'ops@example.test', 'report',"
        " 'x', 'report-' || %s, 'sent', %s, %s, 'report')",
        (n, day, day),
    )
    if n % 5 == 0:
        conn.execute(
            "insert into ops.operations_alerts (rule, subject, summary, status, opened_at,"
            " last_seen_at, resolved_at) values ('test', %s, 'x', 'resolved', %s, %s, %s)",
            (f"s{n}", day, day, day + timedelta(hours=2)),
        )
    failure = None
    if n % 4 == 1:  # a failure every four days; three in four warned a day before
        victim = ids[(n * 7) % EQUIPMENT]
        failed_at = day + timedelta(hours=12)
        failure = (victim, failed_at)
        conn.execute(
            "insert into raw.failure_events (equipment_id, failed_at, source) values (%s, %s,"
            " 'operator')",
            (victim, failed_at),
        )
        if n % 16 != 1:
            alert = conn.execute(
                "insert into ops.alerts (equipment_id, severity, message, status, created_at,"
                " acknowledged_at, resolved_at) values (%s, 'HIGH', 'warned', 'resolved', %s,"
                " %s, %s) returning id",
                (
                    victim,
                    failed_at - timedelta(days=1),
                    failed_at - timedelta(hours=20),
                    failed_at + timedelta(hours=6),
                ),
            ).fetchone()[0]
            conn.execute(
                "insert into ops.notifications (alert_id, channel, recipient, subject, body_text,"
                " dedupe_key, status, created_at, sent_at) values (%s, 'email', 'crew@x.test',"
                " 'HIGH', 'warned', 'alert-' || %s, 'sent', %s, %s)",
                (alert, alert, failed_at - timedelta(days=1), failed_at - timedelta(days=1)),
            )
            conn.execute(
                "insert into ops.maintenance_tasks (equipment_id, alert_id, task_type, status,"
                " scheduled_date, completed_date) values (%s, %s, 'repair', 'completed', %s,"
                " %s)",
                (victim, alert, failed_at, failed_at + timedelta(hours=6)),
            )
    folder = home / "landing" / "archive" / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}"
    folder.mkdir(parents=True)
    (folder / "drop.csv").write_text("x\n")
    reports = home / "reports" / "daily" / f"{day:%Y-%m-%d}"
    reports.mkdir(parents=True)
    (reports / "report.pdf").write_bytes(b"%PDF")
    mail = home / "mailbox" / f"{day:%Y%m%d}.eml"
    mail.parent.mkdir(exist_ok=True)
    mail.write_text("Subject: x\n\nx\n")
    os.utime(mail, (day.timestamp(), day.timestamp()))
    return failure


def _count(conn, table: str) -> int:
    query = sql.SQL("select count(*) from {}").format(sql.Identifier(*table.split(".")))
    return conn.execute(query).fetchone()[0]


def _oldest(conn, query: str):
    return conn.execute(query).fetchone()[0]


def _assert_within_retention(conn, settings: Settings, now: datetime) -> None:
    """Nothing older than its retention (a day's slack: the cleanup runs daily)."""

    def cutoff(days: int) -> datetime:
        return now - timedelta(days=days + 1)

    checks = {
        "resolved alerts": ("select min(resolved_at) from ops.alerts", "alert_days"),
        "audit log": (
            "select min(at) from ops.audit_log where actor <> 'emps-retention'",
            "audit_days",
        ),
        "notifications of no alert": (
            "select min(created_at) from ops.notifications where alert_id is null",
            "notification_days",
        ),
        "alert notifications": (
            "select min(a.resolved_at) from ops.notifications n join ops.alerts a"
            " on a.id = n.alert_id",
            "alert_days",
        ),
        "operations alerts": (
            "select min(resolved_at) from ops.operations_alerts",
            "notification_days",
        ),
        "quarantined rows": (
            "select min(quarantined_at) from raw.quarantined_rows where not (resolution is null"
            " and (kind = 'conflict' or retry_requested_at is not null))",
            "quarantine_days",
        ),
        "ingest ledger": (
            "select min(finished_at) from raw.ingest_files f where not exists (select 1 from"
            " raw.quarantined_rows q where q.ingest_file_id = f.id)",
            "ingest_ledger_days",
        ),
        "HTTP ingest requests whose file left the ledger": (
            "select min(created_at) from ops.api_ingest_requests r where not exists (select 1"
            " from raw.ingest_files f where f.file_name = r.file_name)",
            "ingest_ledger_days",
        ),
    }
    for what, (query, setting) in checks.items():
        oldest = _oldest(conn, query)
        limit = cutoff(getattr(settings.retention, setting))
        assert oldest is None or oldest >= limit, f"{what}: {oldest} older than {limit}"
    # Detailed predictions: whole months past the detail window are rolled up.
    detail = now - timedelta(days=settings.retention.prediction_detail_days)
    month = datetime(detail.year, detail.month, 1, tzinfo=UTC) - timedelta(days=1)
    first_kept = datetime(month.year, month.month, 1, tzinfo=UTC)
    oldest = _oldest(conn, "select min(ts) from ops.predictions")
    assert oldest >= first_kept, f"detailed predictions from {oldest}, detail window {detail}"
    assert _default_rows(conn) == 0, f"rows in the DEFAULT partitions at {now}"


def _default_rows(conn) -> int:
    return conn.execute(
        "select (select count(*) from raw.sensor_readings_default)"
        " + (select count(*) from ops.predictions_default)"
    ).fetchone()[0]


def _assert_folders_within_retention(home: Path, settings: Settings, now: datetime) -> None:
    days = sorted(home.glob("landing/archive/*/*/*"))
    oldest = datetime.strptime("/".join(days[0].parts[-3:]), "%Y/%m/%d").replace(tzinfo=UTC)
    assert oldest >= now - timedelta(days=settings.retention.archive_days + 1)
    reports = sorted(home.glob("reports/daily/*"))
    oldest = datetime.strptime(reports[0].name, "%Y-%m-%d").replace(tzinfo=UTC)
    assert oldest >= now - timedelta(days=settings.retention.reports_days + 1)
    mail = min(p.stat().st_mtime for p in home.glob("mailbox/*.eml"))
    assert mail >= (now - timedelta(days=settings.retention.mailbox_days + 1)).timestamp()


def test_a_hundred_days_stay_within_every_retention_and_keep_the_evidence(fleet):
    """Run daily for 100 simulated days: tables, folders and partitions stay bounded, what left
    a table is in a recorded archive file, labels and open conflicts stay, and the Analytics
    count of failures caught does not change when their alerts are archived."""
    settings, ids = fleet
    start = (datetime.now(UTC) - timedelta(days=DAYS)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    failures = []
    caught_before: dict[tuple[str, datetime], bool] = {}
    labels = {"raw.failure_events": 0, "ops.maintenance_tasks": 0}
    for n in range(DAYS):
        day = start + timedelta(days=n)
        with connect(Role.OWNER, settings) as conn:
            before = {table: _count(conn, table) for table in labels}
            failure = _live_one_day(conn, day, ids, n, settings.home)
            assert _default_rows(conn) == 0, f"the rows of {day:%Y-%m-%d} had no partition"
            for table in labels:
                labels[table] += _count(conn, table) - before[table]
        if failure:
            failures.append(failure)
        # The day's 02:00 cleanup (its readings are all in already: the next day's, from
        # midnight, must find their month's partition, made a day ahead at the latest).
        now = day + timedelta(hours=2)
        if failure:  # what the Analytics page shows, all alerts live
            seen = queries.failures_caught(failure[1], failure[1] + timedelta(hours=1), settings)
            caught_before[failure] = bool(seen["caught"].iloc[0])
        cleanup(settings, now=now)
        if n % 10 == 9 or n == DAYS - 1:
            with connect(Role.OWNER, settings) as conn:
                _assert_within_retention(conn, settings, now)
            _assert_folders_within_retention(settings.home, settings, now)
    with connect(Role.OWNER, settings) as conn:
        # Labels: every failure and every task stays.
        for table, count in labels.items():
            assert _count(conn, table) == count, table
        assert labels["raw.failure_events"] == len(failures)
        # The conflict nobody resolved and the row waiting for its retry stay; the one an
        # admin dismissed went to the archive.
        kept = conn.execute(
            "select file_name from raw.quarantined_rows where quarantined_at < %s order by 1",
            (start + timedelta(days=20),),
        ).fetchall()
        assert kept == [("d3",), ("d5",)]
        # The HTTP requests whose readings are in those kept files still say what became of
        # them; every other request of those days left with its file.
        requests = conn.execute(
            "select r.file_name, s.rows_quarantined, s.rows_conflict from ops.api_ingest_requests r,"
            " ops.api_request_status(r.device_id, r.request_id) s where r.created_at < %s"
            " order by 1",
            (start + timedelta(days=20),),
        ).fetchall()
        assert requests == [("d3-0.csv", 0, 1), ("d5-0.csv", 1, 0)]
        archived_alerts = conn.execute("select count(*) from ops.archived_alerts").fetchone()[0]
        live_alerts = conn.execute("select count(*) from ops.alerts").fetchone()[0]
        assert archived_alerts > 0
        assert archived_alerts + live_alerts == sum(caught_before.values())
        hourly = conn.execute(
            "select count(*), sum(predictions) from ops.predictions_hourly"
        ).fetchone()
        detailed = conn.execute("select count(*) from ops.predictions").fetchone()[0]
        records = dict(
            conn.execute("select kind, sum(row_count) from ops.archive_files group by kind")
        )
    # Every prediction is either detailed or counted in its hour.
    assert hourly[1] + detailed == DAYS * 24 * PER_HOUR * EQUIPMENT
    assert hourly[0] > 0
    # Analytics: the same failures caught and missed as when their alerts were live.
    shown = queries.failures_caught(start, start + timedelta(days=DAYS + 1), settings)
    after = {(r.equipment_id, r.failed_at.to_pydatetime()): r.caught for r in shown.itertuples()}
    assert after == caught_before
    assert sum(caught_before.values()) < len(caught_before)  # some were missed: both counted
    # Ingest volumes: every day's files still counted once the ledger forgot them.
    volume = queries.ingest_volume(start, start + timedelta(days=DAYS + 1), settings)
    assert len(volume) == DAYS
    assert volume["files"].tolist() == [48] * DAYS
    assert volume["rows_loaded"].sum() == 48 * 4 * DAYS
    # Everything taken out is in a file of the size recorded, readable.
    files = sorted(settings.records_dir.rglob("*.jsonl.gz"))
    assert not list(settings.records_dir.rglob("*.part"))
    rows_in_files: dict[str, int] = {}
    for path in files:
        kind = path.relative_to(settings.records_dir).parts[0]
        rows_in_files[kind] = rows_in_files.get(kind, 0) + len(archive.read(path))
    assert rows_in_files == records
    assert records["alerts"] == archived_alerts
    assert records["audit_log"] >= (DAYS - settings.retention.audit_days - 1) * 10
    with gzip.open(next(p for p in files if "/alerts/" in str(p)), "rt") as handle:
        first = json.loads(handle.readline())
    assert first["notifications"][0]["status"] == "sent"
