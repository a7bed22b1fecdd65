"""One ingest run over the landing zone: recover, claim, parse, validate, load, archive.

`ingest_landing` is the plain function behind the Prefect flow, the CLI and the benchmark.

Files are handled in groups (bounded by bytes); each group is validated as few large frames and
loaded in one transaction, so 1,000 one-row files cost one GX run and one commit, not 1,000.
Whatever happens inside one file stays with that file:
- what cannot be read, or breaks a limit (bytes, rows, seconds per file), quarantines the file
  with the reason, and what cannot be read of a row quarantines that row;
- an unexpected error while loading a group is narrowed down by halving the group until the
  file that causes it is alone; that file is quarantined with the error, the others load;
- a file that turns out large while it is read (EMPS_INGEST_BIG_FILE_BYTES decompressed) leaves
  its group and loads in its own transaction after the small files, and between two large
  files the run claims and loads the small files that arrived meanwhile;
- a file a dead run left claimed is taken back alone, before any new file is claimed, and
  quarantined unread once claimed EMPS_INGEST_MAX_ATTEMPTS times.
A full disk is nobody's file's fault. Below EMPS_INGEST_MIN_FREE_MB (looked at before every
claim) ingest claims nothing and loads nothing: drop files wait in incoming/. When a disk fills
up within a run anyway (PostgreSQL or a write to the landing zone answering "no space left"),
the run stops: what is committed stays committed and its files are moved on (or, when even that
fails, by the next run from the ledger), the claims not loaded are given back without counting
an attempt, and the next run with space loads them, once.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from emps import disk
from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect
from emps.ingest import bindings, load
from emps.ingest import landing as zone
from emps.ingest.columns import reading_columns, required_columns, unknown_columns_warning
from emps.ingest.files import FileRejected, open_regular
from emps.ingest.parse import (
    DELIMITERS,
    INTERNAL_COLUMNS,
    LINE,
    PROBLEM,
    ROW,
    Limits,
    OpenQuote,
    ReadNotes,
    TooBigForGroup,
    csv_fields,
    read_records,
)
from emps.ingest.validate import (
    EQUIPMENT_ID_PATTERN,
    FILE,
    SuiteRunner,
    apply_clocks,
    load_suite,
    mark_registered,
    prepare,
    row_reasons,
    suite_parameters,
)
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.ingest")
_paused_for_disk: dict[Path, bool] = {}  # per landing zone: whether ingest last paused for disk
LOAD_ATTEMPTS = 4
RECONNECT_ATTEMPTS = 8
RECONNECT_MAX_WAIT_S = 8
MAX_RETRY_ROWS = 10_000  # quarantined rows an admin asked to retry, per run


@dataclass
class FileOutcome:
    """What happened to one file; also its JSON log line."""

    ledger_id: int | None
    file: str
    stored_as: str
    status: str = "claimed"
    format: str | None = None
    rows_total: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    rows_conflict: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    equipment_ids: set[str] = field(default_factory=set)
    first_problem: str | None = field(default=None, repr=False)

    def log_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("first_problem")
        record["equipment_count"] = len(record.pop("equipment_ids"))
        return {"event": "ingest.file", **record}

    def problem_summary(self) -> str | None:
        """`file: 2 of 7 rows quarantined (first: row 6: voltage value 5000 is outside ...)`."""
        parts = []
        if self.rows_quarantined:
            parts.append(
                f"{self.rows_quarantined} of {self.rows_total} rows quarantined "
                f"(first: {self.first_problem})"
            )
        if self.rows_conflict:
            parts.append(
                f"{self.rows_conflict} row(s) conflict with stored readings (kept for an "
                "admin's review)"
            )
        if not parts:
            return None
        return f"{self.file}: {'; '.join(parts)}; see raw.quarantined_rows"

    def settle_status(self) -> None:
        """loaded, partial, conflict or quarantined, from the counts."""
        usable = self.rows_loaded + self.rows_duplicate + self.rows_conflict
        if self.rows_quarantined and not usable:
            self.status = "quarantined"
        elif self.rows_quarantined:
            self.status = "partial"
        elif self.rows_conflict:
            self.status = "conflict"
        else:
            self.status = "loaded"


@dataclass
class IngestReport:
    """The result of one run: per-file outcomes, the equipment that got data, timings."""

    run_id: str
    files: list[FileOutcome] = field(default_factory=list)
    timings: dict[str, float] = field(
        default_factory=lambda: {"parse_s": 0.0, "validate_s": 0.0, "load_s": 0.0}
    )
    recovered: int = 0
    registered_equipment: list[str] = field(default_factory=list)
    released_rows: int = 0
    paused: str | None = None  # why ingest claimed nothing (more), when the disk is (nearly) full
    disk_filled: bool = False  # the disk filled up within the run (the floor did not catch it)

    @property
    def equipment_ids(self) -> set[str]:
        ids: set[str] = set()
        for outcome in self.files:
            ids |= outcome.equipment_ids
        return ids

    def total(self, key: str) -> int:
        return sum(getattr(outcome, key) for outcome in self.files)

    @property
    def quarantined_files(self) -> list[FileOutcome]:
        return [o for o in self.files if o.status == "quarantined" and o.error]

    def merged_with(self, other: IngestReport) -> IngestReport:
        """This run's report with a further batch of the same run added."""
        return IngestReport(
            run_id=self.run_id,
            files=self.files + other.files,
            timings={k: self.timings.get(k, 0.0) + other.timings.get(k, 0.0) for k in self.timings},
            recovered=self.recovered + other.recovered,
            registered_equipment=self.registered_equipment + other.registered_equipment,
            released_rows=self.released_rows + other.released_rows,
            paused=other.paused,
            disk_filled=self.disk_filled or other.disk_filled,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "statuses": dict(Counter(o.status for o in self.files)),
            "rows_total": self.total("rows_total"),
            "rows_loaded": self.total("rows_loaded"),
            "rows_duplicate": self.total("rows_duplicate"),
            "rows_quarantined": self.total("rows_quarantined"),
            "rows_conflict": self.total("rows_conflict"),
            "equipment": len(self.equipment_ids),
            "recovered": self.recovered,
            "released_rows": self.released_rows,
            "paused": self.paused,
            **{k: round(v, 3) for k, v in self.timings.items()},
        }


@lru_cache(maxsize=4)
def _runner(suite_text: str) -> SuiteRunner:
    # One GX context per process and suite: building it costs seconds, a batch costs far less.
    return SuiteRunner(json.loads(suite_text))


_executor: ThreadPoolExecutor | None = None
# Per landing zone, for the life of the process: when each waiting file was first seen as it is
# (a run is called again and again while it lingers), and the kernel's arrival log.
_settle_clocks: dict[Path, zone.SettleClock] = {}
_arrival_logs: dict[Path, zone.ArrivalLog] = {}


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def _validation_thread() -> ThreadPoolExecutor:
    """The one thread that runs GX beside the database load (created on first use)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emps-gx")
    return _executor


def _forget_process_state() -> None:
    # A forked child has no copy of the parent's threads or inotify reader: it starts its own.
    global _executor
    _executor = None
    _arrival_logs.clear()


os.register_at_fork(after_in_child=_forget_process_state)


def suite_runner(catalog: Catalog) -> SuiteRunner:
    return _runner(json.dumps(load_suite(catalog), sort_keys=True))


def watch_arrivals(settings: Settings | None = None) -> zone.ArrivalLog:
    """Start (once per process) listening for files finished in incoming/; runs of this process
    then claim those at once instead of waiting for them to settle."""
    settings = settings or get_settings()
    landing = zone.Landing(settings.landing_dir).ensure()
    arrivals = _arrival_logs.get(landing.root)
    if arrivals is None or not arrivals.active:
        arrivals = _arrival_logs[landing.root] = zone.ArrivalLog(landing.incoming)
    return arrivals


def stop_watching_arrivals(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    arrivals = _arrival_logs.pop(zone.Landing(settings.landing_dir).root, None)
    if arrivals is not None:
        arrivals.close()


class Ingestor:
    """Runs ingest over the landing zone with one connection and one validation context."""

    def __init__(
        self,
        settings: Settings | None = None,
        catalog: Catalog | None = None,
        on_file: Callable[[FileOutcome], None] | None = None,
        flow_run_id: str | None = None,
    ):
        self.settings = settings or get_settings()
        self.catalog = catalog or load_catalog(self.settings.catalog_path)
        self.readings = reading_columns(self.catalog)
        self.landing = zone.Landing(self.settings.landing_dir).ensure()
        self.runner = suite_runner(self.catalog)
        self.on_file = on_file
        self.flow_run_id = flow_run_id
        self.claimer = f"{socket.gethostname()}:{os.getpid()}"
        self.results_dir = self.settings.home / "gx" / "results"
        self.settle = _settle_clocks.setdefault(
            self.landing.root, zone.SettleClock(self.settings.ingest.settle_s)
        )
        self.settle.settle_s = self.settings.ingest.settle_s
        self.arrivals = _arrival_logs.get(self.landing.root)
        self.headers: dict[int, list[str]] = {}  # CSV header per file, kept with unreadable rows
        self.paused: str | None = None  # set once the disk is too full to go on (see _pause)
        self.disk_filled = False
        self.claims: set[int] = set()  # ledger ids this run claimed or took back
        # Rows of device folders for equipment their device is not bound to, per ledger id,
        # audited when their file's load commits (emps.ingest.bindings).
        self.unbound: dict[int, list[bindings.Unbound]] = {}
        self.results_failed = False

    # -- the run ---------------------------------------------------------------------------

    def run(self, names: list[str] | None = None, limit: int | None = None) -> IngestReport:
        """Ingest what waits in incoming/ (or only `names` there), plus claims left by dead runs."""
        report = IngestReport(run_id=self.flow_run_id or uuid.uuid4().hex[:12])
        budget = limit or self.settings.ingest.max_files_per_run
        conn = self._connect()
        try:
            try:
                # Below the floor nothing loads: claims left by dead runs wait with the drops
                # (those whose load committed are only moved on).
                retake = not self._disk_too_full()
                suspects, returned = self._recover(conn, report, retake)
                for claimed in suspects:
                    conn = self._load_alone(conn, claimed, report)
                conn, large = self._load_small(conn, returned, report)
                if not self.paused:
                    conn = self._retry_requested_rows(conn, report)
                wanted = names
                while True:
                    if self.paused or self._disk_too_full():
                        budget = 0  # drop files wait in incoming/
                    fresh = self._claim_new(conn, wanted, budget)
                    budget -= len(fresh)
                    conn, deferred = self._load_small(conn, fresh, report)
                    large += deferred
                    if self.paused:
                        self._release(conn, large)
                        large = []
                    if not large:
                        break
                    conn = self._load_alone(conn, large.pop(0), report)
                    # Small files that arrived while that one loaded go before the next one.
                    wanted = None if names is None else []
            except Exception as exc:
                if not disk.is_disk_full(exc):
                    raise
                self._stop_for_full_disk(exc)
        finally:
            conn.close()
        report.paused, report.disk_filled = self.paused, self.disk_filled
        self._prune_results()
        return report

    def _disk_too_full(self) -> bool:
        """Whether free disk is under EMPS_INGEST_MIN_FREE_MB (then `paused` says so); logs
        when ingest pauses and when it resumes (once each, not at every look)."""
        space = disk.lowest(self.settings)
        floor_mb = self.settings.ingest.min_free_mb
        paused = space.free < floor_mb * disk.MB
        self.paused = (
            f"{space.describe()}, under EMPS_INGEST_MIN_FREE_MB ({floor_mb:,} MB)"
            if paused
            else None
        )
        if paused != _paused_for_disk.get(self.landing.root, False):
            _paused_for_disk[self.landing.root] = paused
            if paused:
                log.warning(
                    "ingest paused: %s; drop files wait in incoming/ until space returns",
                    self.paused,
                )
            else:
                log.warning("ingest resumed: %s", space.describe())
        return paused

    def _pause(self, exc: BaseException) -> None:
        """The disk filled up within this run: claim nothing more, and say so once."""
        self.disk_filled = True
        if self.paused is None:
            if isinstance(exc, OSError):
                where = disk.lowest(self.settings).describe()
                self.paused = f"the disk filled up ({_disk_error(exc)}); {where}"
            else:
                self.paused = f"the database ran out of disk space ({_disk_error(exc)})"
            log.error(
                "ingest paused: %s. Drop files wait in incoming/, files claimed and not loaded "
                "wait in processing/; the next run with space loads them",
                self.paused,
            )
        _paused_for_disk[self.landing.root] = True

    def _stop_for_full_disk(self, exc: BaseException) -> None:
        """A load ran out of space: its transaction rolled back, so give back every claim of
        this run not finished (the files stay in processing/, taken again at once by the next
        run with space, the attempt not counted)."""
        self._pause(exc)
        try:
            with self._connect() as conn:
                load.release_claims(conn, sorted(self.claims))
        except psycopg.Error:
            log.exception(
                "could not give back this run's claims; they are taken back after "
                "EMPS_INGEST_CLAIM_TIMEOUT_S"
            )

    def _release(self, conn: psycopg.Connection, files: list[zone.ClaimedFile]) -> None:
        """Give back claims this run will not load (see `_stop_for_full_disk`)."""
        load.release_claims(conn, [f.ledger_id for f in files if f.ledger_id is not None])

    def _move_on(self, claimed: zone.ClaimedFile, reason: str | None = None, **details) -> None:
        """Archive a finished file, or quarantine it with `reason`. Its ledger row is final, so
        when the move fails (a full disk) the file stays in processing/ and the next run moves
        it on without loading it again."""
        try:
            if reason is None:
                zone.archive(self.landing, claimed)
            else:
                zone.quarantine(self.landing, claimed, reason, **details)
        except OSError as exc:
            log.warning(
                "%s (finished) stays in processing/ as %s: moving it on failed (%s); the next "
                "run moves it",
                claimed.original_name,
                claimed.stored_name,
                _disk_error(exc),
            )
            if disk.is_disk_full(exc):
                self._pause(exc)

    def _connect(self, attempts: int = 1) -> psycopg.Connection:
        for attempt in range(attempts):
            try:
                return connect(Role.INGEST, self.settings, autocommit=True)
            except psycopg.OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(2**attempt, RECONNECT_MAX_WAIT_S))
        raise AssertionError("unreachable")

    def _load_small(
        self, conn: psycopg.Connection, work: list[zone.ClaimedFile], report: IngestReport
    ) -> tuple[psycopg.Connection, list[zone.ClaimedFile]]:
        """Load newly claimed files in groups; returns the files too large for a group."""
        large = [f for f in work if f.size_bytes > self.settings.ingest.big_file_bytes]
        work = [f for f in work if f.size_bytes <= self.settings.ingest.big_file_bytes]
        # A repeat of a file claimed in this same run waits until the first copy is done:
        # it is a duplicate only if that copy actually loaded.
        while work:
            work, deferred = self._drop_duplicates(conn, work, report)
            for group in self._groups(work):
                if self.paused:  # the disk filled up while an earlier group loaded
                    self._release(conn, group)
                    continue
                conn, too_big = self._load_isolated(conn, group, report)
                large += too_big
            work = deferred
        return conn, large

    def _load_alone(
        self, conn: psycopg.Connection, claimed: zone.ClaimedFile, report: IngestReport
    ) -> psycopg.Connection:
        """One file in its own transaction (a large one, or one a dead run left claimed)."""
        if claimed.attempts > self.settings.ingest.max_attempts:
            return self._fail_file(
                conn,
                claimed,
                f"ingest did not finish this file in {claimed.attempts - 1} attempts (each run "
                "that took it was killed, crashed or lost its database while loading it); it is "
                "quarantined so it no longer holds up other files. Re-ingest it from "
                "quarantine/ once the cause is fixed",
                report,
            )
        work, _ = self._drop_duplicates(conn, [claimed], report)
        for single in work:
            conn, _ = self._load_isolated(conn, [single], report, alone=True)
        return conn

    def _load_isolated(
        self,
        conn: psycopg.Connection,
        group: list[zone.ClaimedFile],
        report: IngestReport,
        alone: bool = False,
    ) -> tuple[psycopg.Connection, list[zone.ClaimedFile]]:
        """Load a group; on an unexpected error, halve it until the file at fault is alone and
        quarantine that file with the error. Database outages and full disks are not a file's
        fault: they propagate (the claims are taken back by a later run)."""
        try:
            return self._load_with_retry(conn, group, report, alone)
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            if disk.is_disk_full(exc):
                raise
            if len(group) == 1:
                log.exception("ingest failed on %s", group[0].original_name)
                reason = (
                    f"the file could not be processed ({type(exc).__name__}: "
                    f"{str(exc)[:300]}); it is kept in quarantine/. This is a fault in ingest, "
                    "not in the file alone: report it with this message"
                )
                return self._fail_file(conn, group[0], reason, report), []
            half = len(group) // 2
            conn, first = self._load_isolated(conn, group[:half], report, alone)
            conn, second = self._load_isolated(conn, group[half:], report, alone)
            return conn, first + second

    def _fail_file(
        self,
        conn: psycopg.Connection,
        claimed: zone.ClaimedFile,
        reason: str,
        report: IngestReport,
    ) -> psycopg.Connection:
        """Quarantine a whole file, unread or after a failure, in its own statement."""
        outcome = FileOutcome(
            claimed.ledger_id,
            claimed.original_name,
            claimed.stored_name,
            status="quarantined",
            error=reason,
        )
        with conn.transaction():
            batch = load.LoadGroup(conn, self.catalog)
            batch.finish_files([self._ledger_row(outcome, rows_total=None)])
        self._move_on(claimed, reason)
        self._emit(report, outcome)
        return conn

    def _load_with_retry(
        self,
        conn: psycopg.Connection,
        group: list[zone.ClaimedFile],
        report: IngestReport,
        alone: bool,
    ) -> tuple[psycopg.Connection, list[zone.ClaimedFile]]:
        """Load a group; when the database drops the connection, reconnect and load it again.

        The failed transaction was rolled back, so loading again cannot double anything. If the
        commit did reach the server before the connection broke, the ledger says so and those
        files are only moved on.
        """
        for attempt in range(LOAD_ATTEMPTS):
            try:
                if attempt:
                    group = self._unfinished(conn, group, report)
                deferred = self._load_group(conn, group, report, alone) if group else []
                return conn, deferred
            except psycopg.OperationalError as exc:
                if attempt == LOAD_ATTEMPTS - 1 or disk.is_disk_full(exc):
                    raise
                log.warning(
                    "database connection lost while loading %d file(s) (%s); retrying",
                    len(group),
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                )
                conn.close()
                time.sleep(min(2**attempt, RECONNECT_MAX_WAIT_S))
                conn = self._connect(attempts=RECONNECT_ATTEMPTS)
        return conn, []

    def _unfinished(
        self, conn: psycopg.Connection, group: list[zone.ClaimedFile], report: IngestReport
    ) -> list[zone.ClaimedFile]:
        ledger = load.ledger_by_stored_name(conn, [f.stored_name for f in group])
        left = []
        for claimed in group:
            row = ledger.get(claimed.stored_name)
            if row is None or row.status not in load.FINISHED:
                left.append(claimed)
                continue
            self._move_finished(claimed, row)
            report.recovered += 1
        return left

    def _move_finished(self, claimed: zone.ClaimedFile, row: load.LedgerRow) -> None:
        if row.status == "quarantined" and row.rows_total is None:
            self._move_on(claimed, row.error or "rejected")
        else:
            self._move_on(claimed)

    def _recover(
        self, conn: psycopg.Connection, report: IngestReport, retake: bool = True
    ) -> tuple[list[zone.ClaimedFile], list[zone.ClaimedFile]]:
        """Finish files a previous run committed but did not move; unless `retake` is off, take
        back (stale claims of runs that died, to load each alone before any new file is claimed;
        claims given back for a full disk, to load like new files)."""
        paths = zone.processing_files(self.landing)
        if not paths:
            return [], []
        ledger = load.ledger_by_stored_name(conn, [p.name for p in paths])
        timeout = self.settings.ingest.claim_timeout_s
        retaken: list[zone.ClaimedFile] = []
        returned: list[zone.ClaimedFile] = []
        for path in paths:
            row = ledger.get(path.name)
            claimed = zone.ClaimedFile(
                original_name=row.file_name if row else path.name.split("-", 1)[-1],
                path=path,
                size_bytes=path.lstat().st_size,
                received_at=row.received_at if row else datetime.now(UTC),
                sha256=row.sha256 if row else "",
                ledger_id=row.id if row else None,
            )
            if row is not None and row.status in load.FINISHED:
                self._move_finished(claimed, row)
                report.recovered += 1
                continue
            if not retake:
                continue
            ours = row is not None and row.claimed_by == self.claimer
            given_back = row is not None and row.claimed_by is None
            suspect = row is None or row.attempts > 1  # a run died holding it before
            if (
                not ours
                and not given_back
                and zone.claim_age_s(path) < timeout
                and (row is None or (datetime.now(UTC) - row.claimed_at).total_seconds() < timeout)
            ):
                continue  # another run may still be working on it
            if not claimed.sha256:
                try:
                    claimed.sha256 = zone.sha256_of(path)
                except FileRejected as exc:
                    claimed.refused = exc.reason
                    claimed.sha256 = f"refused:{path.name}"
            (returned if given_back and not suspect else retaken).append(claimed)
        if retaken or returned:
            load.record_claims(conn, retaken + returned, self.flow_run_id, self.claimer)
            self.claims.update(f.ledger_id for f in retaken + returned if f.ledger_id is not None)
            report.recovered += len(retaken) + len(returned)
        if retaken:
            log.warning("took back %d file(s) claimed by a run that did not finish", len(retaken))
        return retaken, returned

    def _claim_new(
        self, conn: psycopg.Connection, names: list[str] | None, limit: int
    ) -> list[zone.ClaimedFile]:
        if limit <= 0:
            return []
        if names is None:
            found = zone.scan(
                self.landing.incoming,
                settle=self.settle,
                announced=self.arrivals.announced if self.arrivals else None,
            )
            entries = found.ready[:limit]
            self._note_ignored(conn, found.ignored)
        else:
            entries = [e for n in names[:limit] if (e := zone.entry_for(self.landing, n))]
        claimed = []
        for entry in entries:
            taken = zone.claim(self.landing, entry)
            if self.arrivals is not None:
                self.arrivals.forget(entry.rel)
            if taken is not None:
                claimed.append(taken)
        load.record_claims(conn, claimed, self.flow_run_id, self.claimer)
        self.claims.update(f.ledger_id for f in claimed if f.ledger_id is not None)
        return claimed

    def _note_ignored(self, conn: psycopg.Connection, ignored: list[zone.Ignored]) -> None:
        """Record entries ingest never claims once they are old enough to look forgotten; forget
        those that went away."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.ingest.ignored_warn_s)
        old = [i for i in ignored if i.modified_at <= cutoff]
        rows = conn.execute(
            """
            with current as (
                select * from unnest(%s::text[], %s::text[], %s::bigint[], %s::timestamptz[])
                    as c(path, why, size_bytes, modified_at)
            ), gone as (
                delete from raw.landing_ignored i
                where not exists (select 1 from current c where c.path = i.path)
            )
            insert into raw.landing_ignored as i (path, why, size_bytes, modified_at)
            select path, why, size_bytes, modified_at from current
            on conflict (path) do update
                set why = excluded.why, size_bytes = excluded.size_bytes,
                    modified_at = excluded.modified_at, last_seen_at = now()
            returning i.path, i.why, (xmax = 0) as new
            """,
            (
                [load.text_safe(i.rel) for i in old],
                [i.why for i in old],
                [i.size for i in old],
                [i.modified_at for i in old],
            ),
        ).fetchall()
        for path, why, new in rows:
            if new:
                log.warning("incoming/%s is never ingested: it is %s", path, why)

    def _drop_duplicates(
        self, conn: psycopg.Connection, work: list[zone.ClaimedFile], report: IngestReport
    ) -> tuple[list[zone.ClaimedFile], list[zone.ClaimedFile]]:
        """Files whose exact content was loaded before are not loaded: (to load, repeats of a
        file earlier in this batch, to look at again once that one is done)."""
        if not work:
            return work, []
        first = load.loaded_hashes(conn, sorted({f.sha256 for f in work}))
        duplicates: dict[int, int] = {}
        keep: list[zone.ClaimedFile] = []
        deferred: list[zone.ClaimedFile] = []
        in_batch: set[str] = set()
        for claimed in work:
            if claimed.sha256 in first and first[claimed.sha256] != claimed.ledger_row_id:
                duplicates[claimed.ledger_row_id] = first[claimed.sha256]
            elif claimed.sha256 in in_batch:
                deferred.append(claimed)
            else:
                in_batch.add(claimed.sha256)
                keep.append(claimed)
        load.mark_duplicates(conn, duplicates)
        for claimed in work:
            if claimed.ledger_row_id in duplicates:
                self._move_on(claimed)
                self._emit(
                    report,
                    FileOutcome(
                        claimed.ledger_row_id,
                        claimed.original_name,
                        claimed.stored_name,
                        status="duplicate",
                        error=f"same content as ingest file {duplicates[claimed.ledger_row_id]}",
                    ),
                )
        return keep, deferred

    def _groups(self, work: list[zone.ClaimedFile]) -> Iterator[list[zone.ClaimedFile]]:
        group: list[zone.ClaimedFile] = []
        size = 0
        for claimed in work:
            group.append(claimed)
            size += claimed.size_bytes
            if size >= self.settings.ingest.group_bytes:
                yield group
                group, size = [], 0
        if group:
            yield group

    # -- one transaction -------------------------------------------------------------------

    def _load_group(
        self,
        conn: psycopg.Connection,
        group: list[zone.ClaimedFile],
        report: IngestReport,
        alone: bool,
    ) -> list[zone.ClaimedFile]:
        """Load a group in one transaction; returns the files that left it for being large."""
        outcomes = {
            f.ledger_row_id: FileOutcome(f.ledger_row_id, f.original_name, f.stored_name)
            for f in group
        }
        by_id = {f.ledger_row_id: f for f in group}
        rejected: dict[int, FileRejected] = {}
        deferred: list[zone.ClaimedFile] = []
        chunk_rows = self.settings.ingest.chunk_rows
        for claimed in group:  # left by an attempt of this group that rolled back
            self.unbound.pop(claimed.ledger_row_id, None)
        with conn.transaction():
            batch = load.LoadGroup(conn, self.catalog)
            pending: list[tuple[int, pd.DataFrame | list[dict]]] = []
            pending_rows = 0
            flushed: set[int] = set()
            for claimed in group:
                outcome = outcomes[claimed.ledger_row_id]
                started = time.perf_counter()
                try:
                    for part in self._read_file(claimed, outcome, alone):
                        if pending_rows >= chunk_rows:
                            # The current file is not read to its end yet: its rows are
                            # staged, not copied directly (it may still turn out unreadable).
                            report.timings["parse_s"] += time.perf_counter() - started
                            flushed |= self._flush(
                                conn, batch, pending, outcomes, by_id, report, claimed.ledger_row_id
                            )
                            started = time.perf_counter()
                            pending, pending_rows = [], 0
                        pending.append((claimed.ledger_row_id, part))
                        pending_rows += len(part)
                    if pending_rows >= chunk_rows:
                        report.timings["parse_s"] += time.perf_counter() - started
                        flushed |= self._flush(conn, batch, pending, outcomes, by_id, report)
                        started = time.perf_counter()
                        pending, pending_rows = [], 0
                except (FileRejected, TooBigForGroup) as exc:
                    pending = [(i, part) for i, part in pending if i != claimed.ledger_row_id]
                    pending_rows = sum(len(part) for _, part in pending)
                    if claimed.ledger_row_id in flushed:
                        batch.discard(claimed.ledger_row_id)
                    if isinstance(exc, TooBigForGroup):
                        deferred.append(claimed)
                        del outcomes[claimed.ledger_row_id]
                    else:
                        rejected[claimed.ledger_row_id] = exc
                        outcome.status, outcome.error = "quarantined", exc.reason
                        outcome.rows_total = outcome.rows_duplicate = 0
                        outcome.rows_quarantined = outcome.rows_conflict = 0
                        outcome.equipment_ids = set()
                        outcome.first_problem = None
                report.timings["parse_s"] += time.perf_counter() - started
            if pending:
                self._flush(conn, batch, pending, outcomes, by_id, report)
            started = time.perf_counter()
            counts = batch.insert()
            rows = []
            for ledger_id, outcome in outcomes.items():
                if ledger_id in rejected:
                    rows.append(self._ledger_row(outcome, rows_total=None))
                    continue
                offered, inserted, conflicts = counts.get(ledger_id, (0, 0, 0))
                outcome.rows_loaded = inserted
                outcome.rows_conflict = conflicts
                outcome.rows_duplicate += offered - inserted - conflicts
                outcome.error = outcome.problem_summary()
                outcome.settle_status()
                rows.append(self._ledger_row(outcome, rows_total=outcome.rows_total))
                if unbound := self.unbound.pop(ledger_id, None):
                    bindings.audit(conn, unbound, {ledger_id: by_id[ledger_id].original_name})
            batch.finish_files(rows)
        report.timings["load_s"] += time.perf_counter() - started
        # Committed: from here a crash only leaves files in processing/, which the next run
        # moves on by reading the ledger.
        for ledger_id, outcome in outcomes.items():
            claimed = by_id[ledger_id]
            if ledger_id in rejected:
                self._move_on(claimed, rejected[ledger_id].reason, **rejected[ledger_id].details)
            else:
                self._move_on(claimed)
            self._emit(report, outcome)
        return deferred

    @staticmethod
    def _ledger_row(outcome: FileOutcome, rows_total: int | None) -> dict[str, Any]:
        return {
            "id": outcome.ledger_id,
            "format": outcome.format,
            "status": outcome.status,
            "rows_total": rows_total,
            "rows_loaded": outcome.rows_loaded,
            "rows_duplicate": outcome.rows_duplicate,
            "rows_quarantined": outcome.rows_quarantined,
            "rows_conflict": outcome.rows_conflict,
            "error": outcome.error,
            "warnings": outcome.warnings,
        }

    def _limits(self, alone: bool) -> Limits:
        settings = self.settings
        return Limits(
            max_bytes=settings.ingest.max_file_bytes,
            max_rows=settings.ingest.max_file_rows,
            max_seconds=settings.ingest.max_file_seconds,
            group_bytes=None if alone else settings.ingest.big_file_bytes,
        )

    def _read_file(
        self, claimed: zone.ClaimedFile, outcome: FileOutcome, alone: bool
    ) -> Iterator[pd.DataFrame | list[dict]]:
        """The file's rows: one list of dicts for a small file, bounded frames for a large one."""
        if claimed.refused:
            raise FileRejected(claimed.refused)
        notes = ReadNotes()
        with open_regular(claimed.path) as handle:
            fd = handle.fileno()
            stamp = claimed.stamp
            if stamp is not None and (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (
                stamp.ino,
                stamp.dev,
            ):
                raise FileRejected("the file in processing/ was replaced after it was claimed")

            def settled() -> bool:
                if stamp is None:  # taken back from a dead run: unchanged for a long time
                    return True
                now = zone.Stamp.of(os.fstat(fd))
                return (now.size, now.mtime_ns) == (stamp.size, stamp.mtime_ns)

            chunks = read_records(
                handle,
                chunk_rows=self.settings.ingest.chunk_rows,
                numeric=frozenset(self.readings),
                limits=self._limits(alone),
                notes=notes,
                settled=settled,
            )
            checked = False
            for chunk in chunks:
                outcome.format = notes.format
                if not checked:
                    self._require_columns(notes.columns, chunk)
                    checked = True
                    if notes.format.startswith("csv"):
                        self.headers[claimed.ledger_row_id] = list(notes.columns)
                if isinstance(chunk, list):
                    for record in chunk:
                        record[FILE] = claimed.ledger_row_id
                else:
                    chunk[FILE] = claimed.ledger_row_id
                outcome.rows_total += len(chunk)
                yield chunk
        outcome.format = notes.format
        if outcome.rows_total == 0:
            raise FileRejected("the file has a header but no readings")
        if not checked:
            self._require_columns(notes.columns, [])
        outcome.warnings = list(notes.warnings)
        if unknown := unknown_columns_warning(notes.columns, self.catalog):
            outcome.warnings.append(unknown)

    def _require_columns(self, columns: list[str], chunk: pd.DataFrame | list[dict]) -> None:
        data_columns = [c for c in columns if c not in INTERNAL_COLUMNS]
        if not data_columns:
            first = None
            if isinstance(chunk, list) and chunk:
                first = chunk[0].get(PROBLEM)
            elif isinstance(chunk, pd.DataFrame) and PROBLEM in chunk.columns and len(chunk):
                first = chunk[PROBLEM].iloc[0]
            if first:
                raise FileRejected(
                    f"no record is a JSON object with readings (first: {first}); send a JSON "
                    "array of objects or one object per line"
                )
        missing = [c for c in required_columns(self.catalog) if c not in columns]
        if not missing:
            return
        shown = ", ".join(repr(c[:40]) for c in data_columns[:12]) or "no columns"
        hint = ""
        if len(data_columns) == 1 and any(sep in data_columns[0] for sep in ":/ "):
            hint = " The header looks like it uses a delimiter other than , ; tab or |."
        raise FileRejected(
            f"required column(s) {', '.join(missing)} missing; the file has {shown}.{hint}",
            missing_columns=missing,
        )

    def _validate(
        self,
        conn: psycopg.Connection,
        raw: pd.DataFrame,
        report: IngestReport,
        sources: dict[int, str],
    ) -> tuple[pd.DataFrame, Any, pd.DataFrame, Any, dict[int, bindings.Unbound]]:
        """Type a batch, refuse rows of device folders for equipment their device is not bound
        to, and look up its equipment: (raw, prepared, rows for the suite, their index in the
        typed frame, the unbound rows). `sources`: each ledger id's path in incoming/."""
        prepared = prepare(raw, self.readings, self.settings.ingest.naive_timestamps_utc)
        frame = prepared.frame
        unbound = bindings.unbound_rows(
            frame, sources, bindings.Bindings.load(conn), skip=set(prepared.problems)
        )
        for index, item in unbound.items():
            prepared.problems[index] = [item.reason]
        types = load.equipment_types(conn)
        if self.settings.ingest.unknown_equipment == "register":
            # Equipment a device folder may not report is not registered on its say-so either.
            bound = frame.loc[~frame.index.isin(list(unbound)), "equipment_id"]
            unknown = set(bound.dropna().unique()) - set(types)
            valid = {i for i in unknown if re.match(EQUIPMENT_ID_PATTERN, i)}
            registered = load.register_equipment(conn, valid, self.catalog)
            report.registered_equipment += registered
            types = load.equipment_types(conn) if registered else types
        # The equipment's type decides what its rows need: a counter-clocked type's counter
        # (and the time it stands for), the channels that type requires.
        apply_clocks(prepared, types, self.catalog)
        skip = frame.index.isin(list(prepared.problems))
        checked = frame[~skip].reset_index(drop=True)
        original_index = frame.index[~skip].to_numpy()
        mark_registered(checked, set(types))
        return raw, prepared, checked, original_index, unbound

    def _flush(
        self,
        conn: psycopg.Connection,
        batch: load.LoadGroup,
        pending: list[tuple[int, pd.DataFrame | list[dict]]],
        outcomes: dict[int, FileOutcome],
        by_id: dict[int, zone.ClaimedFile],
        report: IngestReport,
        unfinished_file: int | None = None,
    ) -> set[int]:
        """Validate a batch of rows (many files at once), load good rows, quarantine bad ones."""
        started = time.perf_counter()
        frames = [part for _, part in pending if isinstance(part, pd.DataFrame)]
        records = [r for _, part in pending if isinstance(part, list) for r in part]
        if records:
            frames.append(pd.DataFrame.from_records(records))
        raw = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        raw = raw.reset_index(drop=True)
        sources = {ledger_id: claimed.original_name for ledger_id, claimed in by_id.items()}
        raw, prepared, checked, original_index, unbound = self._validate(conn, raw, report, sources)
        for item in unbound.values():
            self.unbound.setdefault(item.ledger_id, []).append(item)
        frame = prepared.frame
        repeated = self._exact_repeats(raw, frame, set(prepared.problems), outcomes)
        skip = frame.index.isin(list(prepared.problems) + repeated)
        if repeated:
            keep = ~pd.Index(original_index).isin(repeated)
            checked = checked[keep].reset_index(drop=True)
            original_index = original_index[keep]
        report.timings["parse_s"] += time.perf_counter() - started

        # Rows whose key is well formed are COPYed into raw.sensor_readings while Great
        # Expectations validates the batch in a second thread (PostgreSQL works on the other
        # core); the rows it rejects are taken out again before the commit.
        well_formed = frame["equipment_id"].str.fullmatch(EQUIPMENT_ID_PATTERN).fillna(False)
        candidates = frame[~skip & well_formed.astype(bool) & frame["ts"].notna()]
        if unfinished_file is not None:
            candidates = candidates[candidates[FILE].ne(unfinished_file)]
        started = time.perf_counter()
        now = datetime.now(UTC)
        parameters = suite_parameters(self.settings, now)
        validation = _validation_thread().submit(_timed, self.runner.run, checked, parameters)
        try:
            direct, copy_s = _timed(batch.copy_direct, candidates)
        finally:
            (failures, result), validate_s = validation.result()
        for failure in failures:
            failure.rows = [int(original_index[i]) for i in failure.rows]
        reasons = row_reasons(prepared, failures, self.catalog, self.settings, parameters)
        self._keep_result(result, now)
        # Wall times of each side; they overlap, so they add up to more than the elapsed time.
        report.timings["validate_s"] += validate_s
        report.timings["load_s"] += copy_s

        started = time.perf_counter()
        bad_index = pd.Index(sorted(reasons), dtype="int64")
        good = frame.drop(index=bad_index.union(pd.Index(repeated, dtype="int64")))
        if direct is None:
            batch.stage(good)
        else:
            inserted, stored = direct
            batch.retract(frame.loc[inserted.index[inserted].intersection(bad_index)])
            settled = good.index.isin(inserted.index[inserted | stored])
            batch.count_direct(good[settled], good[good.index.isin(inserted.index[inserted])])
            # Rows of a file not read to its end yet, repeats of a key whose first row may just
            # have been rejected, and stored keys with other values: staging, `on conflict` and
            # the conflict check sort them out.
            batch.stage(good[~settled])
        for ledger_id, ids in good.groupby(FILE)["equipment_id"].unique().items():
            outcomes[int(ledger_id)].equipment_ids |= set(ids)
        self._note_refusals(prepared, reasons, outcomes)
        batch.quarantine(self._quarantine_rows(prepared, bad_index, reasons, outcomes, by_id))
        report.timings["load_s"] += time.perf_counter() - started
        return {int(i) for i in raw[FILE].unique()}

    @staticmethod
    def _note_refusals(
        prepared: Any, reasons: dict[int, list[str]], outcomes: dict[int, FileOutcome]
    ) -> None:
        """A ledger warning per file and column whose booleans were refused as numbers."""
        for column, flags in prepared.booleans.items():
            rows = flags[flags]
            for ledger_id in prepared.frame.loc[rows.index, FILE].unique():
                outcome = outcomes.get(int(ledger_id))
                if outcome is None:
                    continue
                text = (
                    f"refused to read JSON true/false as a number in column {column!r}: "
                    "those rows are quarantined"
                )
                if text not in outcome.warnings:
                    outcome.warnings.append(text)

    @staticmethod
    def _exact_repeats(
        raw: pd.DataFrame, frame: pd.DataFrame, skip: set[int], outcomes: dict[int, FileOutcome]
    ) -> list[int]:
        """Rows repeating an earlier row of the same file field for field: the same reading sent
        twice, a duplicate rather than an error. Different values for one timestamp are left
        for the suite's uniqueness expectation to quarantine."""
        same_key = frame.duplicated([FILE, "equipment_id", "ts"], keep=False)
        same_key &= ~frame.index.isin(list(skip))
        if not same_key.any():
            return []
        columns = [c for c in raw.columns if c not in INTERNAL_COLUMNS or c == FILE]
        candidates = raw.loc[same_key, columns].astype("str")
        repeated = [int(i) for i in candidates.index[candidates.duplicated()]]
        for ledger_id, n in raw.loc[repeated, FILE].value_counts().items():
            outcomes[int(ledger_id)].rows_duplicate += int(n)
        return repeated

    def _quarantine_rows(
        self,
        prepared: Any,
        bad_index: pd.Index,
        reasons: dict[int, list[str]],
        outcomes: dict[int, FileOutcome],
        by_id: dict[int, zone.ClaimedFile],
    ) -> list[tuple]:
        raw, frame = prepared.raw, prepared.frame
        rows = []
        raw_columns = [c for c in raw.columns if c not in INTERNAL_COLUMNS or c == LINE]
        for index in bad_index:
            record = raw.loc[index]
            ledger_id = int(record[FILE])
            values = {c: load.json_safe(record[c]) for c in raw_columns}
            kind = prepared.kinds.get(int(index), "invalid")
            if kind != "invalid" and ledger_id in self.headers:
                values["_header"] = self.headers[ledger_id]
            equipment_id = frame.at[index, "equipment_id"]
            rows.append(
                (
                    ledger_id,
                    by_id[ledger_id].original_name,
                    int(record[ROW]),
                    None if pd.isna(equipment_id) else str(equipment_id),
                    reasons[index],
                    {k: v for k, v in values.items() if v is not None},
                    kind,
                )
            )
            outcome = outcomes[ledger_id]
            outcome.rows_quarantined += 1
            if outcome.first_problem is None:
                first = reasons[index][0].split(" [expect_")[0]
                outcome.first_problem = f"row {int(record[ROW])}: {first}"
        return rows

    # -- rows an admin asked to retry --------------------------------------------------------

    def _retry_requested_rows(
        self, conn: psycopg.Connection, report: IngestReport
    ) -> psycopg.Connection:
        """Validate again the quarantined rows an admin asked to retry: those that pass load
        (released), the others keep their new reasons."""
        requested = conn.execute(
            "select q.id, q.ingest_file_id, q.row_number, q.kind, q.raw_values, "
            "q.retry_requested_by, f.format, f.file_name from raw.quarantined_rows q "
            "left join raw.ingest_files f on f.id = q.ingest_file_id "
            "where q.retry_requested_at is not null and q.resolution is null "
            "order by q.id limit %s",
            (MAX_RETRY_ROWS,),
        ).fetchall()
        if not requested:
            return conn
        records = []
        # A row of a device's folder is still bound to what that device may report.
        sources = {r[1]: r[7] for r in requested if r[1] is not None and r[7]}
        for row_id, file_id, row_number, kind, values, _by, fmt, _name in requested:
            record = retry_record(kind, values, fmt or "")
            record[ROW] = row_number or 0
            record[FILE] = file_id or 0
            record["_quarantined_row"] = row_id
            records.append(record)
        raw = pd.DataFrame.from_records(records)
        by_row = dict(zip(raw.index, raw.pop("_quarantined_row"), strict=True))
        who = {r[0]: r[5] for r in requested}
        with conn.transaction():
            batch = load.LoadGroup(conn, self.catalog)
            raw, prepared, checked, original_index, unbound = self._validate(
                conn, raw, report, sources
            )
            if unbound:
                bindings.audit(conn, list(unbound.values()), sources)
            parameters = suite_parameters(self.settings, datetime.now(UTC))
            failures, _ = self.runner.run(checked, parameters)
            for failure in failures:
                failure.rows = [int(original_index[i]) for i in failure.rows]
            reasons = row_reasons(prepared, failures, self.catalog, self.settings, parameters)
            good = prepared.frame.drop(index=pd.Index(sorted(reasons), dtype="int64"))
            batch.stage(good)
            counts = batch.insert()
            for index, texts in reasons.items():
                conn.execute(
                    "update raw.quarantined_rows set reasons = %s, retry_requested_at = null, "
                    "resolution_note = %s where id = %s",
                    (
                        [load.text_safe(t) for t in texts],
                        f"retried at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: still refused",
                        by_row[index],
                    ),
                )
            released = [by_row[i] for i in good.index]
            if released:
                conn.execute(
                    "update raw.quarantined_rows q set resolution = 'released', "
                    "resolved_by = q.retry_requested_by, resolved_at = now(), "
                    "resolution_note = 'retried: loaded, already stored, or now a conflict to review' "
                    "where q.id = any(%s)",
                    (released,),
                )
                for file_id, (offered, inserted, conflicts) in counts.items():
                    conn.execute(
                        "update raw.ingest_files set rows_loaded = coalesce(rows_loaded, 0) + %s, "
                        "rows_duplicate = coalesce(rows_duplicate, 0) + %s, "
                        "rows_conflict = coalesce(rows_conflict, 0) + %s, "
                        "rows_quarantined = greatest(coalesce(rows_quarantined, 0) - %s, 0) "
                        "where id = %s",
                        (inserted, offered - inserted - conflicts, conflicts, offered, file_id),
                    )
            report.released_rows += len(released)
            for row_id in released:
                log.info("quarantined row %s released on %s's request", row_id, who[row_id])
        return conn

    # -- reporting ---------------------------------------------------------------------------

    def _emit(self, report: IngestReport, outcome: FileOutcome) -> None:
        report.files.append(outcome)
        # Debug only: a flow run logs one line for its clean files and one per problem file
        # (emps.flows.ingest); every file's outcome is in the ledger and the run's artifact. At
        # info, the worker's `emps` logger would send the Prefect API a line per file.
        if log.isEnabledFor(logging.DEBUG):
            log.debug(json.dumps(outcome.log_record(), ensure_ascii=False))
        if self.on_file is not None:
            self.on_file(outcome)

    def _keep_result(self, result: dict[str, Any], when: datetime) -> None:
        """Keep the GX validation result so `emps quality docs` can render it. Only a copy for
        the docs: a full disk skips it (said once a run) rather than failing the load."""
        path = self.results_dir / f"{when:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}.json"
        try:
            self.results_dir.mkdir(parents=True, exist_ok=True)
            zone.write_whole(path, json.dumps(result, default=str))
        except OSError as exc:
            if not self.results_failed:
                self.results_failed = True
                log.warning(
                    "validation results not kept for `emps quality docs` (%s)", _disk_error(exc)
                )

    def _prune_results(self) -> None:
        if not self.results_dir.exists():
            return
        kept = sorted(self.results_dir.glob("*.json"))
        for old in kept[: -self.settings.ingest.keep_validations]:
            old.unlink(missing_ok=True)


def _disk_error(exc: BaseException) -> str:
    """`No space left on device: /var/emps/landing/archive/2026/12/06`, or the database's word."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def retry_record(kind: str, values: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A quarantined row as a record to validate again. A row the parser could not read is
    read from its text: a CSV row by the header it came with, missing trailing fields empty
    (the admin who asks for the retry takes the row as it is); a JSON row as its object."""
    if kind == "invalid" or LINE not in values:
        return {k: v for k, v in values.items() if k not in INTERNAL_COLUMNS}
    text = str(values[LINE])
    header = values.get("_header")
    if fmt.startswith("csv") and isinstance(header, list):
        formats = sorted(DELIMITERS.items(), key=lambda item: -len(item[1]))
        delimiter = next((d for d, name in formats if fmt.startswith(name)), ",")
        try:
            fields = csv_fields(text, delimiter)
        except (OpenQuote, csv.Error, UnicodeDecodeError):
            fields = []
        if 0 < len(fields) <= len(header):
            return {n: (v.strip() or None) for n, v in zip(header, fields, strict=False)}
    else:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
        if isinstance(value, dict):
            return {str(k).strip().lower(): v for k, v in value.items()}
    return {PROBLEM: f"the row still cannot be read: {values.get('_problem', text[:80])}"}


def ingest_landing(
    settings: Settings | None = None,
    names: list[str] | None = None,
    limit: int | None = None,
    on_file: Callable[[FileOutcome], None] | None = None,
    flow_run_id: str | None = None,
) -> IngestReport:
    """Ingest the waiting files (all of incoming/, or the given names in it)."""
    return Ingestor(settings, on_file=on_file, flow_run_id=flow_run_id).run(names, limit)


def files_waiting(settings: Settings | None = None) -> bool:
    """True when a regular file waits in incoming/ or its folders (ready or still settling)."""
    return zone.files_waiting((settings or get_settings()).landing_dir)


def stage_into_incoming(paths: list[Path], settings: Settings | None = None) -> list[str]:
    """Copy files (or every file of folders) into incoming/ the way devices drop them.

    Written under a partial name and renamed, so a concurrent run never sees half a file.
    """
    settings = settings or get_settings()
    landing = zone.Landing(settings.landing_dir).ensure()
    names = []
    for path in _expand(paths):
        name = path.name
        if zone.is_partial_name(name) or (landing.incoming / name).exists():
            name = f"{uuid.uuid4().hex[:8]}-{zone.safe_name(name)}"
        partial = landing.incoming / f".{name}.part"
        try:
            with path.open("rb") as source, partial.open("wb") as target:
                while block := source.read(1 << 20):
                    target.write(block)
            os.replace(partial, landing.incoming / name)
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk leaves no half copy behind
            raise
        names.append(name)
    return names


def _expand(paths: list[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and not zone.is_partial_name(p.name)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files
