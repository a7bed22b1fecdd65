"""The live fleet: every interval, one drop file per device (or per site gateway) in the landing zone.

Readings come from the same pure function of (seed, equipment, minute) as the backfill, so live
continues a backfilled history of the same seed without a seam. Failures, repairs and preventive
services that happen while it runs are written to raw.failure_events / ops.maintenance_tasks
(source 'simulator'), as an operator or the maintenance system would record them; drop files
carry only sensor readings, as the drop contract says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

from emps.db import Role, connect
from emps.settings import Settings, get_settings
from emps.simulator.drops import (
    DEFECTS,
    FORMAT_WEIGHTS,
    FORMATS,
    GZIP_SHARE,
    DropFile,
    build_drop,
    file_name,
    format_timestamp,
    write_atomic,
)
from emps.simulator.events import EventCounts, record_events, register_fleet
from emps.simulator.fleet import DAY_S, EPOCH_S, SITES, Fleet

log = logging.getLogger(__name__)
_DROPS = 6  # random stream id for file formats and defects
TIMESTAMP_STYLES = ("iso_utc", "iso_offset", "epoch")


@dataclass
class LiveTick:
    ts: datetime
    files: list[DropFile] = field(default_factory=list)
    rows: int = 0
    events: EventCounts = field(default_factory=EventCounts)


def incoming_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).landing_dir / "incoming"


class LiveSimulator:
    """Writes the fleet's readings for one interval at a time into `directory`."""

    def __init__(
        self,
        fleet: Fleet,
        directory: Path,
        interval_s: int = 60,
        per_site: bool = False,
        bad_share: float = 0.0,
        settings: Settings | None = None,
        use_database: bool = True,
    ):
        if interval_s < 60 or interval_s % 60:
            raise ValueError(
                f"--interval {interval_s}: devices report on whole minutes (60, 120, ... seconds)"
            )
        if not 0.0 <= bad_share <= 1.0:
            raise ValueError(f"--bad-share {bad_share}: must be between 0 and 1")
        self.fleet = fleet
        self.directory = Path(directory)
        self.interval_s = interval_s
        self.per_site = per_site
        self.bad_share = bad_share
        self.settings = settings or get_settings()
        self.use_database = use_database
        self.valid_ranges = {s.name: s.valid_range for s in fleet.catalog.sensors.values()}
        self._registered = False
        self._events_from: datetime | None = None  # events before this are recorded

    def current_tick(self, now: datetime | None = None) -> datetime:
        now_s = int((now or datetime.now(UTC)).timestamp())
        return datetime.fromtimestamp(now_s // self.interval_s * self.interval_s, UTC)

    def readings_at(self, ts: datetime) -> list[dict]:
        """Every reporting device's reading at minute `ts` (down or silent devices are absent)."""
        ts_s = int(ts.timestamp())
        if ts_s % 60:
            raise ValueError(f"{ts.isoformat()}: readings exist on whole minutes only")
        day, minute = divmod((ts_s - EPOCH_S) // 60, DAY_S // 60)
        block = self.fleet.simulate_day(day, minutes=np.array([minute]))
        sensors = self.fleet.sensors
        records = []
        for row in np.flatnonzero(block.present[:, 0]):
            values = block.values[row, :, 0]
            record = {"equipment_id": self.fleet.equipment[row].equipment_id, "timestamp": ts}
            record.update(
                {s: None if np.isnan(v) else float(v) for s, v in zip(sensors, values, strict=True)}
            )
            records.append(record)
        return records

    def tick(self, ts: datetime) -> LiveTick:
        """Write the drop files of interval `ts`, and record events up to it."""
        result = LiveTick(ts)
        ts_s = int(ts.timestamp())
        rng = np.random.default_rng([self.fleet.seed, _DROPS, ts_s])
        groups: dict[str, list[dict]] = {}
        for record in self.readings_at(ts):
            equipment = self.fleet.by_id[record["equipment_id"]]
            source = f"gw-{equipment.site}" if self.per_site else equipment.equipment_id
            groups.setdefault(source, []).append(record)
        for source, records in groups.items():
            fmt = FORMATS[int(rng.choice(len(FORMATS), p=FORMAT_WEIGHTS))]
            gzipped = bool(rng.random() < GZIP_SHARE)
            style = TIMESTAMP_STYLES[int(rng.integers(len(TIMESTAMP_STYLES)))]
            site_offset = SITES.index(self.fleet.by_id[records[0]["equipment_id"]].site) % 5 - 2
            rendered = [
                {**r, "timestamp": format_timestamp(r["timestamp"], style, site_offset)}
                for r in records
            ]
            defect = None
            if rng.random() < self.bad_share:
                defect = DEFECTS[int(rng.integers(len(DEFECTS)))]
            data, fmt = build_drop(
                rendered, self.fleet.sensors, self.valid_ranges, fmt, gzipped, defect, rng
            )
            path = write_atomic(self.directory, file_name(source, ts, fmt, gzipped), data)
            result.files.append(DropFile(path, fmt, gzipped, len(records), defect))
            result.rows += len(records)
        if self.use_database:
            result.events = self._record(ts)
        return result

    def _record(self, ts: datetime) -> EventCounts:
        """Record events since the last successful recording; a database outage only delays them."""
        since = self._events_from or ts - timedelta(seconds=self.interval_s)
        until = ts + timedelta(seconds=1)
        try:
            with connect(Role.INGEST, self.settings) as conn:
                if not self._registered:
                    register_fleet(conn, self.fleet)
                    self._registered = True
                counts = record_events(conn, self.fleet, since, until)
                conn.commit()
        except psycopg.OperationalError as exc:
            log.warning(
                "database unreachable, failure events since %s will be recorded later: %s",
                since.isoformat(),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return EventCounts()
        self._events_from = until
        return counts

    def run(
        self,
        once: bool = False,
        on_tick: Callable[[LiveTick], None] | None = None,
        max_ticks: int | None = None,
    ) -> int:
        """Write the current interval, then each next one on its boundary; returns ticks written."""
        ticks = 0
        ts = self.current_tick()
        while True:
            result = self.tick(ts)
            ticks += 1
            if on_tick:
                on_tick(result)
            if once or (max_ticks is not None and ticks >= max_ticks):
                return ticks
            ts = ts + timedelta(seconds=self.interval_s)
            wait = ts.timestamp() - time.time()
            if wait > 0:
                time.sleep(wait)
            else:
                # Behind schedule (a slow disk, a suspended laptop): skip to the current interval
                # rather than replaying a burst of stale intervals.
                ts = max(ts, self.current_tick())
