"""Rows taken out of the database as evidence, written as compressed JSON lines under
<home>/records/<kind>/YYYY/MM/: one file per batch, one JSON object per row as PostgreSQL's
`to_jsonb` renders it (an archived alert carries its notifications).

A batch is taken (deleted) by `ops.take_for_archive` and the file recorded in
`ops.archive_files` in one transaction, after the file is written and flushed to disk as
`<name>.part`; it is renamed once the transaction commits. So a row is either in its table or
in a recorded file: a `.part` left by a crash is finished at the next run if its record
committed, and deleted if not (its rows are still in the table)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import uuid
from datetime import datetime
from pathlib import Path

import psycopg

from emps.db import Role, connect
from emps.settings import Settings

# What is archived, in this order: an alert's notifications go with it; a quarantined row
# before the ledger entry of its file (emps.alerting.retention prunes the ledger after).
KINDS = ("alerts", "notifications", "operations_alerts", "audit_log", "quarantined_rows")
BATCH_ROWS = 20_000
LOCK_KEY = 7_042_142  # one archiving run at a time: its `.part` files are its own


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, lines: list[str]) -> tuple[str, int]:
    """Write `lines` gzipped to `path`, flushed to disk; its SHA-256 and size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
            for line in lines:
                packed.write(line.encode())
                packed.write(b"\n")
        raw.flush()
        os.fsync(raw.fileno())
    _fsync_dir(path.parent)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, path.stat().st_size


def finish_interrupted(conn: psycopg.Connection, records: Path) -> tuple[int, int]:
    """Rename the `.part` files whose record committed, delete the others: (finished, removed)."""
    finished = removed = 0
    for part in sorted(records.glob("*/*/*/*.jsonl.gz.part")):
        final = part.with_suffix("")
        relative = str(final.relative_to(records))
        if conn.execute("select 1 from ops.archive_files where path = %s", (relative,)).fetchone():
            os.replace(part, final)
            _fsync_dir(final.parent)
            finished += 1
        else:
            part.unlink()
            removed += 1
    return finished, removed


def archive(
    kind: str, before: datetime, settings: Settings, now: datetime, batch: int = BATCH_ROWS
) -> int:
    """Take `kind`'s rows older than `before` out of the database into archive files; how many."""
    records = settings.records_dir
    taken = 0
    while True:
        folder = records / kind / f"{now:%Y}" / f"{now:%m}"
        final = folder / f"{kind}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.jsonl.gz"
        part = final.with_name(final.name + ".part")
        with connect(Role.ALERTING, settings) as conn:
            try:
                with conn.transaction():
                    rows = conn.execute(
                        "select r::text from ops.take_for_archive(%s, %s, %s) r",
                        (kind, before, batch),
                    ).fetchall()
                    if not rows:
                        return taken
                    digest, size = _write(part, [r[0] for r in rows])
                    conn.execute(
                        "insert into ops.archive_files"
                        " (kind, path, row_count, sha256, size_bytes, taken_before)"
                        " values (%s, %s, %s, %s, %s, %s)",
                        (kind, str(final.relative_to(records)), len(rows), digest, size, before),
                    )
            except BaseException:
                part.unlink(missing_ok=True)  # the rows are back in their table
                raise
        os.replace(part, final)
        _fsync_dir(folder)
        taken += len(rows)
        if len(rows) < batch:
            return taken


def archive_all(cutoffs: dict[str, datetime], settings: Settings, now: datetime) -> dict[str, int]:
    """Archive every kind past its cutoff, one run at a time; rows archived per kind."""
    with connect(Role.ALERTING, settings) as conn:
        locked = conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        assert locked is not None  # a select without from returns one row
        if not locked[0]:
            return {}  # another cleanup is archiving right now
        try:
            finish_interrupted(conn, settings.records_dir)
            return {kind: archive(kind, cutoffs[kind], settings, now) for kind in KINDS}
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))


def read(path: Path) -> list[dict]:
    """The rows of one archive file (for an auditor, and the tests)."""
    import json

    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]
