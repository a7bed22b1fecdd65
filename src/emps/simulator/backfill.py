"""History straight into the database: readings by binary COPY, in bounded chunks, plus events.

Re-running over a window that already has readings does not duplicate them: each chunk (one
day of up to 250 equipment) first checks whether any of its rows exist. Empty chunks go the fast
path (COPY straight into raw.sensor_readings); chunks that overlap earlier data are copied into a
temporary table and merged with `on conflict do nothing`. Events are idempotent upserts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg import sql

from emps.db import Role, connect
from emps.settings import Settings, get_settings
from emps.simulator.events import EventCounts, record_events, register_fleet
from emps.simulator.fleet import DAY_S, Fleet, ReadingChunk

PG_EPOCH_S = 946_684_800  # 2000-01-01 UTC: PostgreSQL's binary timestamp origin
BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
BINARY_TRAILER = b"\xff\xff"

Progress = Callable[[int], None]  # called with the rows of each chunk written


@dataclass
class BackfillReport:
    equipment: int
    start: datetime
    end: datetime
    interval_s: int
    rows: int = 0
    chunks: int = 0
    merged_chunks: int = 0  # chunks that overlapped existing readings
    rows_existing: int = 0  # rows of those chunks that were already there (not duplicated)
    seconds: float = 0.0
    events: EventCounts = field(default_factory=EventCounts)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def history_window(
    days: int, interval_s: int, end: datetime | None = None
) -> tuple[datetime, datetime]:
    """[start, end) of `days` of history ending at `end` (default: now), on the interval grid."""
    end = end or datetime.now(UTC)
    end_s = int(end.timestamp()) // interval_s * interval_s
    return datetime.fromtimestamp(end_s - days * DAY_S, UTC), datetime.fromtimestamp(end_s, UTC)


class BinaryRows:
    """Encodes reading chunks into PostgreSQL's binary COPY format with numpy, no per-row Python."""

    def __init__(self, fleet: Fleet):
        ids = [e.equipment_id.encode() for e in fleet.equipment]
        self.id_len = np.array([len(b) for b in ids], dtype=np.int64)
        self.id_bytes = np.zeros((len(ids), int(self.id_len.max())), dtype=np.uint8)
        for row, raw in enumerate(ids):
            self.id_bytes[row, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self.n_fields = 2 + len(fleet.sensors)

    @staticmethod
    def _put(buf: np.ndarray, pos: np.ndarray, data: np.ndarray) -> None:
        buf[pos[:, None] + np.arange(data.shape[1])] = data

    def encode(self, chunk: ReadingChunk) -> bytes:
        n = len(chunk)
        if not n:
            return b""
        eq, values = chunk.equipment_index, chunk.values
        null = np.isnan(values)
        id_len = self.id_len[eq]
        # field count, id (4 + len), ts (4 + 8), per sensor 4 (null) or 4 + 8
        row_size = 2 + 4 + id_len + 12 + np.where(null, 4, 12).sum(axis=1)
        starts = np.zeros(n, dtype=np.int64)
        np.cumsum(row_size[:-1], out=starts[1:])
        buf = np.empty(int(row_size.sum()), dtype=np.uint8)

        def be(array: np.ndarray, dtype: str) -> np.ndarray:
            return np.ascontiguousarray(array.astype(dtype)).view(np.uint8).reshape(len(array), -1)

        self._put(buf, starts, be(np.full(n, self.n_fields), ">i2"))
        self._put(buf, starts + 2, be(id_len, ">i4"))
        for length in np.unique(id_len):
            rows = id_len == length
            self._put(buf, starts[rows] + 6, self.id_bytes[eq[rows], :length])
        pos = starts + 6 + id_len
        self._put(buf, pos, be(np.full(n, 8), ">i4"))
        self._put(buf, pos + 4, be((chunk.ts_s - PG_EPOCH_S) * 1_000_000, ">i8"))
        pos = pos + 12
        for col in range(values.shape[1]):
            missing = null[:, col]
            self._put(buf, pos, be(np.where(missing, -1, 8), ">i4"))
            self._put(buf, pos[~missing] + 4, be(values[~missing, col], ">f8"))
            pos = pos + np.where(missing, 4, 12)
        return buf.tobytes()


def copy_statement(table: str, sensors: list[str]) -> sql.Composed:
    schema, name = table.split(".") if "." in table else (None, table)
    target = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ["equipment_id", "ts", *sensors])
    return sql.SQL("copy {} ({}) from stdin (format binary)").format(target, columns)


def copy_rows(conn: psycopg.Connection, statement: sql.Composed, payloads: Iterator[bytes]) -> None:
    """One binary COPY of the already-encoded row payloads."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.write(BINARY_HEADER)
        for payload in payloads:
            copy.write(payload)
        copy.write(BINARY_TRAILER)


def _overlaps(conn: psycopg.Connection, ids: list[str], chunk: ReadingChunk) -> bool:
    start = datetime.fromtimestamp(int(chunk.ts_s.min()), UTC)
    end = datetime.fromtimestamp(int(chunk.ts_s.max()), UTC)
    row = conn.execute(
        "select exists (select 1 from raw.sensor_readings "
        "where equipment_id = any(%s) and ts between %s and %s)",
        (ids, start, end),
    ).fetchone()
    return bool(row and row[0])


def backfill(
    fleet: Fleet,
    start: datetime,
    end: datetime,
    interval_s: int,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> BackfillReport:
    """Register the fleet and write its readings and events for [start, end) at `interval_s`."""
    settings = settings or get_settings()
    report = BackfillReport(len(fleet), start, end, interval_s)
    encoder = BinaryRows(fleet)
    sensors = fleet.sensors
    direct = copy_statement("raw.sensor_readings", sensors)
    staged = copy_statement("sim_stage", sensors)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ["equipment_id", "ts", *sensors])
    began = time.perf_counter()
    with connect(Role.INGEST, settings) as conn:
        # A crash loses at most the last chunks, which a rerun writes again.
        conn.execute("set synchronous_commit = off")
        conn.execute(
            "select ops.ensure_month_partitions('raw.sensor_readings'::regclass, %s, %s)",
            (start, end - timedelta(seconds=1)),
        )
        register_fleet(conn, fleet)
        conn.execute(
            sql.SQL(
                "create temp table sim_stage on commit delete rows as "
                "select {} from raw.sensor_readings with no data"
            ).format(columns)
        )
        conn.commit()
        for chunk in fleet.chunks(start, end, interval_s):
            if not len(chunk):
                continue
            ids = [fleet.equipment[i].equipment_id for i in np.unique(chunk.equipment_index)]
            if _overlaps(conn, ids, chunk):
                copy_rows(conn, staged, iter([encoder.encode(chunk)]))
                inserted = conn.execute(
                    sql.SQL(
                        "insert into raw.sensor_readings ({c}) select {c} from sim_stage "
                        "on conflict (equipment_id, ts) do nothing"
                    ).format(c=columns)
                ).rowcount
                report.merged_chunks += 1
                report.rows_existing += len(chunk) - inserted
            else:
                copy_rows(conn, direct, iter([encoder.encode(chunk)]))
            conn.commit()
            report.rows += len(chunk)
            report.chunks += 1
            if progress:
                progress(len(chunk))
        report.events = record_events(conn, fleet, start, end)
        conn.commit()
    report.seconds = time.perf_counter() - began
    return report
