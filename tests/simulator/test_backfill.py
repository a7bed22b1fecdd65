"""`emps simulate backfill` against the session's real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from emps.catalog import Catalog, load_catalog
from emps.cli import app
from emps.migrate import migrate
from emps.settings import Settings
from emps.simulator.backfill import backfill
from emps.simulator.fleet import DAY_S, Fleet


def _first_episode(fleet: Fleet, after: datetime, mode: str | None = None, min_duty: float = 0.0):
    """The earliest gradual failure after `after` (of `mode` if given, on equipment running at
    least `min_duty` of the time): gives tests a known window."""
    after_s = int(after.timestamp())
    candidates = [
        ep
        for eq in fleet.equipment
        if eq.duty >= min_duty
        for ep in eq.episodes_until(after_s + 400 * DAY_S)
        if ep.failure_s > after_s
        and not ep.sudden
        and not ep.prevented
        and (mode is None or ep.mode == mode)
    ]
    return min(candidates, key=lambda ep: ep.failure_s)


def _counts(conn: psycopg.Connection) -> dict[str, int]:
    return {
        table: conn.execute(f"select count(*) from {table}").fetchone()[0]  # noqa: S608
        for table in (
            "raw.sensor_readings",
            "raw.failure_events",
            "ops.maintenance_tasks",
            "sim.equipment_truth",
            "raw.equipment",
        )
    }


def test_backfill_writes_readings_events_and_maintenance(db: Settings, owner_conn, catalog):
    """Backfill writes every simulated reading, the failures with repairs, and maintenance records."""
    fleet = Fleet(catalog, 20, 42)
    episode = _first_episode(fleet, datetime(2026, 1, 1, tzinfo=UTC))
    end = datetime.fromtimestamp(episode.repaired_s // 600 * 600 + 6 * 3600, UTC)
    start = end - timedelta(days=12)
    report = backfill(fleet, start, end, 600, db)

    counts = _counts(owner_conn)
    assert counts["raw.sensor_readings"] == report.rows
    assert 0.9 * 20 * 12 * 144 < report.rows < 20 * 12 * 144
    assert counts["raw.equipment"] == 20
    start_s, end_s = int(start.timestamp()), int(end.timestamp())
    planned = [
        ep
        for eq in fleet.equipment
        for ep in eq.episodes_until(end_s)
        if start_s <= ep.failure_s < end_s and not ep.prevented
    ]
    recorded = owner_conn.execute(
        "select count(*) from raw.failure_events where source = 'simulator'"
    ).fetchone()[0]
    assert planned and recorded == len(planned)
    # Recorded at the hour it failed in.
    failure = owner_conn.execute(
        "select failure_mode, source, repaired_at from raw.failure_events "
        "where equipment_id = %s and failed_at = %s",
        (episode.equipment_id, episode.failure_at.replace(minute=0, second=0)),
    ).fetchone()
    assert failure == (episode.mode, "simulator", episode.repaired_at)
    repair = owner_conn.execute(
        "select status, outcome, completed_date from ops.maintenance_tasks "
        "where equipment_id = %s and task_type = 'repair'",
        (episode.equipment_id,),
    ).fetchone()
    assert repair == ("completed", "fault_found", episode.repaired_at)
    assert report.events.preventive > 0
    assert (
        owner_conn.execute(
            "select count(*) from ops.maintenance_tasks where task_type = 'preventive' "
            "and status = 'completed'"
        ).fetchone()[0]
        == report.events.preventive
    )
    # No readings while the equipment is down between failure and repair.
    down = owner_conn.execute(
        "select count(*) from raw.sensor_readings where equipment_id = %s and ts >= %s and ts < %s",
        (episode.equipment_id, episode.failure_at, episode.repaired_at),
    ).fetchone()[0]
    assert down == 0


def test_rerun_and_overlapping_window_do_not_duplicate(db: Settings, owner_conn, catalog):
    """Running the same backfill twice, or a window overlapping it, adds no duplicate rows."""
    fleet = Fleet(catalog, 10, 42)
    end = datetime(2026, 3, 10, tzinfo=UTC)
    backfill(fleet, end - timedelta(days=4), end, 600, db)
    first = _counts(owner_conn)
    again = backfill(fleet, end - timedelta(days=4), end, 600, db)
    assert _counts(owner_conn) == first
    assert again.rows_existing == again.rows

    later = backfill(fleet, end - timedelta(days=2), end + timedelta(days=2), 600, db)
    total = owner_conn.execute("select count(*) from raw.sensor_readings").fetchone()[0]
    assert total == first["raw.sensor_readings"] + later.rows - later.rows_existing
    assert later.rows_existing > 0
    dupes = owner_conn.execute(
        "select count(*) from (select equipment_id, scheduled_date from ops.maintenance_tasks "
        "group by 1, 2 having count(*) > 1) d"
    ).fetchone()[0]
    assert dupes == 0


def test_degrading_equipment_drift_before_failure(db: Settings, owner_conn, catalog):
    """Vibration climbs over the weeks before a bearing failure while healthy peers stay level."""
    fleet = Fleet(catalog, 60, 42)
    # On a machine that runs most of the day, so that idle days do not hide the trend.
    episode = _first_episode(fleet, datetime(2026, 2, 1, tzinfo=UTC), "bearing_wear", 0.5)
    failed = episode.failure_at
    backfill(fleet, failed - timedelta(days=24), failed + timedelta(hours=1), 600, db)
    equipment_type = fleet.by_id[episode.equipment_id].equipment_type
    peers = [
        e.equipment_id
        for e in fleet.equipment
        if e.equipment_type == equipment_type
        and e.equipment_id != episode.equipment_id
        and not any(
            ep.degradation_start_s < episode.failure_s + DAY_S
            and ep.repaired_s > episode.failure_s - 25 * DAY_S
            for ep in e.episodes_until(episode.failure_s + DAY_S)
        )
    ]
    assert len(peers) >= 3
    rows = owner_conn.execute(
        """
        select equipment_id,
               regr_slope(vibration, extract(epoch from ts) / 86400)
                   filter (where ts >= %(f)s - interval '3 days') as per_day,
               avg(vibration) filter (where ts >= %(f)s - interval '3 days')
                 - avg(vibration) filter (where ts < %(f)s - interval '21 days') as rise
        from raw.sensor_readings
        where ts >= %(f)s - interval '24 days' and ts < %(f)s
          and equipment_id = any(%(ids)s)
        group by equipment_id
        """,
        {"f": failed, "ids": [episode.equipment_id, *peers]},
    ).fetchall()
    slope = {eid: per_day for eid, per_day, _ in rows}
    rise = {eid: r for eid, _, r in rows}
    low, high = catalog.envelope(equipment_type, "vibration")
    # Last 3 days vs 3 weeks earlier: the failing one is far above its old level, peers are not
    # (a fault's drift is shared with other sensors, so its main one moves by less than a band).
    assert rise[episode.equipment_id] > 0.3 * (high - low)
    assert max(abs(rise[p]) for p in peers) < rise[episode.equipment_id] / 3
    # And it is still climbing in those last days, faster than a typical healthy peer.
    peer_slopes = sorted(slope[p] for p in peers)
    assert slope[episode.equipment_id] > max(0.0, peer_slopes[len(peer_slopes) // 2])


def test_extra_catalog_sensor_column_is_filled(
    db: Settings, owner_conn, catalog: Catalog, extra_sensor_catalog: Path
):
    """With a sensor added to the catalog and migrated, backfill fills its column."""
    extra = load_catalog(extra_sensor_catalog)
    migrate(db, extra)
    try:
        fleet = Fleet(extra, 5, 42)
        end = datetime(2026, 4, 1, tzinfo=UTC)
        report = backfill(fleet, end - timedelta(days=1), end, 600, db)
        filled = owner_conn.execute(
            "select count(oil_quality) from raw.sensor_readings"
        ).fetchone()[0]
        assert report.rows > 600
        assert filled > 0.98 * report.rows
    finally:
        migrate(db, catalog)  # the catalog tables back to the default catalog


def test_backfill_command_reports_rows_per_second(db: Settings, owner_conn):
    """`emps simulate backfill` shows its progress and ends with the rows/s it achieved."""
    result = CliRunner().invoke(
        app,
        ["simulate", "backfill", "--equipment", "4", "--days", "2", "--end", "2026-05-01"],
    )
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output
    rows = owner_conn.execute("select count(*) from raw.sensor_readings").fetchone()[0]
    assert f"{rows:,} readings" in result.output
    assert rows > 0.9 * 4 * 2 * 144


def test_dashboard_role_cannot_read_the_ground_truth(db: Settings):
    """The read-only dashboard role is refused sim.equipment_truth; the truth never reaches users."""
    from emps.db import Role, connect

    with connect(Role.READER, db) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select count(*) from sim.equipment_truth")


def test_a_fault_a_service_found_is_recorded_as_a_prevented_failure(
    db: Settings, owner_conn, catalog
):
    """A preventive service that found a developing fault is recorded as such; the platform
    counts a prevented failure at its completion, and the machine's failure never comes."""
    fleet = Fleet(catalog, 40, 42)
    after_s = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
    episode = min(
        (
            ep
            for eq in fleet.equipment
            for ep in eq.episodes_until(after_s + 400 * DAY_S)
            if ep.prevented and ep.found_s > after_s
        ),
        key=lambda ep: ep.found_s,
    )
    found = datetime.fromtimestamp(episode.found_s, UTC)
    end = datetime.fromtimestamp(episode.failure_s // 600 * 600 + 2 * DAY_S, UTC)
    backfill(fleet, found - timedelta(days=2), end, 600, db)

    task = owner_conn.execute(
        "select task_type, status, outcome from ops.maintenance_tasks "
        "where equipment_id = %s and completed_date = %s",
        (episode.equipment_id, found),
    ).fetchone()
    assert task == ("preventive", "completed", "fault_found")
    failures = owner_conn.execute(
        "select failed_at, prevented, failure_mode from raw.failure_events "
        "where equipment_id = %s order by failed_at",
        (episode.equipment_id,),
    ).fetchall()
    assert failures[0] == (found, True, "fault found at a preventive service")
    assert all(at > end or at == found for at, *_ in failures)
    truth = owner_conn.execute(
        "select prevented, recorded_failure_at from sim.equipment_truth "
        "where equipment_id = %s and failure_at = %s",
        (episode.equipment_id, episode.failure_at),
    ).fetchone()
    assert truth == (True, found)
    # Readings go on where it would have failed.
    readings = owner_conn.execute(
        "select count(*) from raw.sensor_readings where equipment_id = %s and ts >= %s",
        (episode.equipment_id, episode.failure_at),
    ).fetchone()[0]
    assert readings > 0.9 * (end - episode.failure_at).total_seconds() / 600
