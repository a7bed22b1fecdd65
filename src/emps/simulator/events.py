"""What happened to the fleet besides readings: failures, repairs, preventive services (some of
which find a developing fault: a prevented failure), ground truth.

Backfill records a whole window at once; live records each interval as it passes. Both call
`record_events` for a window, and every write is idempotent, so overlapping windows are harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from emps.simulator.fleet import DAY_S, Fleet

SOURCE = "simulator"


@dataclass
class EventCounts:
    failure_events: int = 0
    repairs: int = 0
    preventive: int = 0
    prevented: int = 0  # services that found a developing fault
    truth: int = 0

    def __iadd__(self, other: EventCounts) -> EventCounts:
        self.failure_events += other.failure_events
        self.repairs += other.repairs
        self.preventive += other.preventive
        self.prevented += other.prevented
        self.truth += other.truth
        return self


def _dt(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def register_fleet(conn: psycopg.Connection, fleet: Fleet) -> int:
    """Upsert the fleet into raw.equipment (source 'simulator'); returns the rows written.

    Equipment registered by an operator import keeps its record: the simulator never overwrites it.
    """
    with conn.cursor() as cur:
        cur.executemany(
            """
            insert into raw.equipment
                (equipment_id, equipment_type, site, unit, commissioned_at, source)
            values (%s, %s, %s, %s, %s, 'simulator')
            on conflict (equipment_id) do update
                set equipment_type = excluded.equipment_type, site = excluded.site,
                    unit = excluded.unit, commissioned_at = excluded.commissioned_at
                where raw.equipment.source = 'simulator'
            """,
            [
                (e.equipment_id, e.equipment_type, e.site, e.unit, e.commissioned_at)
                for e in fleet.equipment
            ],
        )
    return len(fleet)


@dataclass
class FleetEvents:
    """What happened to a fleet over a window: failures (equipment, failed at, mode, repaired at
    or None, note), repairs (equipment, began, done, note), preventive services (equipment,
    began, done, found a fault) and the simulator's truth about each degradation. Failure times
    are as the records hold them (to the hour); a fault a service found is no failure but that
    service's finding (a prevented failure to the platform)."""

    failures: list[tuple] = field(default_factory=list)
    repairs: list[tuple] = field(default_factory=list)
    services: list[tuple] = field(default_factory=list)
    truth: list[tuple] = field(default_factory=list)


def fleet_events(fleet: Fleet, start: datetime, end: datetime) -> FleetEvents:
    """The failures, repairs, services and truth that fall in [start, end)."""
    start_s, end_s = int(start.timestamp()), int(end.timestamp())
    failures, repairs, truth, services = [], [], [], []
    for eq in fleet.equipment:
        for ep in eq.episodes_until(end_s):
            if ep.degradation_start_s < end_s and ep.repaired_s >= start_s:
                truth.append(
                    (
                        ep.equipment_id,
                        ep.failure_at,
                        ep.mode,
                        ep.degradation_start,
                        ep.repaired_at,
                        ep.sudden,
                        ep.amplitude,
                        ep.tau_days,
                        fleet.seed,
                        ep.prevented,
                        ep.recorded_at,
                    )
                )
            if ep.prevented:
                continue
            failed_in = start_s <= ep.failure_s < end_s
            repaired_in = start_s <= ep.repaired_s < end_s
            if failed_in or repaired_in:
                repaired = ep.repaired_at if ep.repaired_s < end_s else None
                note = f"simulated {ep.mode} failure" + (" (sudden)" if ep.sudden else "")
                failures.append((ep.equipment_id, ep.recorded_at, ep.mode, repaired, note))
            if repaired_in:
                repairs.append(
                    (
                        ep.equipment_id,
                        ep.recorded_at,
                        ep.repaired_at,
                        f"repair after {ep.mode.replace('_', ' ')} failure",
                    )
                )
        # By completion, so a service running across a window's end is recorded in the next.
        services += [
            (s.equipment_id, s.scheduled_date, s.completed_date, s.found_fault)
            for s in eq.services_between(start_s - DAY_S, end_s)
            if start_s <= s.end_s < end_s
        ]
    return FleetEvents(failures, repairs, services, truth)


def record_events(
    conn: psycopg.Connection, fleet: Fleet, start: datetime, end: datetime
) -> EventCounts:
    """Write the failures, repairs, services and truth that fall in [start, end)."""
    events = fleet_events(fleet, start, end)
    failures, repairs, services, truth = (
        events.failures,
        events.repairs,
        events.services,
        events.truth,
    )
    counts = EventCounts()
    with conn.cursor() as cur:
        # A failure first recorded while its repair was still ahead gets repaired_at later.
        cur.executemany(
            """
            insert into raw.failure_events
                (equipment_id, failed_at, failure_mode, source, repaired_at, notes)
            values (%s, %s, %s, 'simulator', %s, %s)
            on conflict (equipment_id, failed_at) do update
                set repaired_at = coalesce(raw.failure_events.repaired_at, excluded.repaired_at)
                where raw.failure_events.source = 'simulator'
            """,
            failures,
        )
        counts.failure_events = len(failures)
        counts.repairs = _insert_tasks(
            cur,
            "repair",
            1,
            "fault_found",
            [(eid, failed, repaired, note) for eid, failed, repaired, note in repairs],
        )
        # A service that found a fault records a prevented failure (the labels' trigger).
        for found, outcome, note in (
            (False, "no_fault_found", "periodic preventive service"),
            (True, "fault_found", "periodic preventive service: developing fault found, mended"),
        ):
            counts.preventive += _insert_tasks(
                cur,
                "preventive",
                4,
                outcome,
                [(eid, begin, done, note) for eid, begin, done, hit in services if hit == found],
            )
        counts.prevented = sum(hit for *_, hit in services)
        cur.executemany(
            """
            insert into sim.equipment_truth
                (equipment_id, failure_at, degradation_mode, degradation_start, repaired_at,
                 sudden, amplitude, tau_days, seed, prevented, recorded_failure_at)
            values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            on conflict (equipment_id, failure_at) do nothing
            """,
            truth,
        )
        counts.truth = len(truth)
    return counts


def _insert_tasks(
    cur: psycopg.Cursor,
    task_type: str,
    priority: int,
    outcome: str,
    rows: list[tuple[str, datetime, datetime, str]],
) -> int:
    """Completed maintenance records, once each (keyed by equipment, type and scheduled date)."""
    cur.executemany(
        """
        insert into ops.maintenance_tasks
            (equipment_id, task_type, priority, status, scheduled_date, completed_date, outcome,
             notes, created_by, created_at, updated_at)
        select %(eid)s, %(type)s, %(priority)s, 'completed', %(begin)s, %(done)s, %(outcome)s,
               %(note)s, 'simulator', %(begin)s, %(done)s
        where not exists (
            select 1 from ops.maintenance_tasks
            where equipment_id = %(eid)s and task_type = %(type)s
              and scheduled_date = %(begin)s and created_by = 'simulator'
        )
        """,
        [
            {
                "eid": eid,
                "type": task_type,
                "priority": priority,
                "begin": begin,
                "done": done,
                "outcome": outcome,
                "note": note,
            }
            for eid, begin, done, note in rows
        ],
    )
    return len(rows)
