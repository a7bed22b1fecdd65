"""One ingest run over the landing zone: recover, claim, parse, validate, load, archive.

`ingest_landing` is the plain function behind the Prefect flow, the CLI and the benchmark.
Files are handled in groups (bounded by bytes); each group is validated as few large frames and
loaded in one transaction, so 1,000 one-row files cost one GX run and one commit, not 1,000.
"""

from __future__ import annotations

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
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect
from emps.ingest import landing as zone
from emps.ingest import load
from emps.ingest.parse import (
    PROBLEM,
    ROW,
    SMALL_FILE_BYTES,
    FileRejected,
    detect_format,
    iter_records,
    read_small,
)
from emps.ingest.validate import (
    EQUIPMENT_ID_PATTERN,
    FILE,
    SuiteRunner,
    load_suite,
    mark_registered,
    prepare,
    row_reasons,
    suite_parameters,
)
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.ingest")
LOAD_ATTEMPTS = 4
RECONNECT_ATTEMPTS = 8
RECONNECT_MAX_WAIT_S = 8


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
    error: str | None = None
    equipment_ids: set[str] = field(default_factory=set)
    first_problem: str | None = field(default=None, repr=False)

    def log_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("first_problem")
        record["equipment_count"] = len(record.pop("equipment_ids"))
        return {"event": "ingest.file", **record}

    def problem_summary(self) -> str | None:
        """`file: 2 of 7 rows quarantined (first: row 6: voltage value 5000 is outside ...)`."""
        if not self.rows_quarantined:
            return None
        return (
            f"{self.file}: {self.rows_quarantined} of {self.rows_total} rows quarantined "
            f"(first: {self.first_problem}); see raw.quarantined_rows"
        )


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
        )

    def summary(self) -> dict[str, Any]:
        return {
            "files": len(self.files),
            "statuses": dict(Counter(o.status for o in self.files)),
            "rows_total": self.total("rows_total"),
            "rows_loaded": self.total("rows_loaded"),
            "rows_duplicate": self.total("rows_duplicate"),
            "rows_quarantined": self.total("rows_quarantined"),
            "equipment": len(self.equipment_ids),
            "recovered": self.recovered,
            **{k: round(v, 3) for k, v in self.timings.items()},
        }


@lru_cache(maxsize=4)
def _runner(suite_text: str) -> SuiteRunner:
    # One GX context per process and suite: building it costs seconds, a batch costs far less.
    return SuiteRunner(json.loads(suite_text))


_executor: ThreadPoolExecutor | None = None


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    return function(*args), time.perf_counter() - started


def _validation_thread() -> ThreadPoolExecutor:
    """The one thread that runs GX beside the database load (created on first use)."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emps-gx")
    return _executor


def _forget_executor() -> None:
    # A forked child has no copy of the parent's threads: it must start its own.
    global _executor
    _executor = None


os.register_at_fork(after_in_child=_forget_executor)


def suite_runner(catalog: Catalog) -> SuiteRunner:
    return _runner(json.dumps(load_suite(catalog), sort_keys=True))


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
        self.landing = zone.Landing(self.settings.landing_dir).ensure()
        self.runner = suite_runner(self.catalog)
        self.on_file = on_file
        self.flow_run_id = flow_run_id
        self.claimer = f"{socket.gethostname()}:{os.getpid()}"
        self.results_dir = self.settings.home / "gx" / "results"

    # -- the run ---------------------------------------------------------------------------

    def run(self, names: list[str] | None = None, limit: int | None = None) -> IngestReport:
        """Ingest what waits in incoming/ (or only `names` there), plus claims left by dead runs."""
        report = IngestReport(run_id=self.flow_run_id or uuid.uuid4().hex[:12])
        limit = limit or self.settings.ingest_max_files_per_run
        conn = self._connect()
        try:
            work = self._recover(conn, report)
            work += self._claim_new(conn, names, max(limit - len(work), 0))
            # A repeat of a file claimed in this same run waits until the first copy is done:
            # it is a duplicate only if that copy actually loaded.
            while work:
                work, deferred = self._drop_duplicates(conn, work, report)
                for group in self._groups(work):
                    conn = self._load_with_retry(conn, group, report)
                work = deferred
        finally:
            conn.close()
        self._prune_results()
        return report

    def _connect(self, attempts: int = 1) -> psycopg.Connection:
        for attempt in range(attempts):
            try:
                return connect(Role.INGEST, self.settings, autocommit=True)
            except psycopg.OperationalError:
                if attempt == attempts - 1:
                    raise
                time.sleep(min(2**attempt, RECONNECT_MAX_WAIT_S))
        raise AssertionError("unreachable")

    def _load_with_retry(
        self, conn: psycopg.Connection, group: list[zone.ClaimedFile], report: IngestReport
    ) -> psycopg.Connection:
        """Load a group; when the database drops the connection, reconnect and load it again.

        The failed transaction was rolled back, so loading again cannot double anything. If the
        commit did reach the server before the connection broke, the ledger says so and those
        files are only moved on.
        """
        for attempt in range(LOAD_ATTEMPTS):
            try:
                if attempt:
                    group = self._unfinished(conn, group, report)
                if group:
                    self._load_group(conn, group, report)
                return conn
            except psycopg.OperationalError as exc:
                if attempt == LOAD_ATTEMPTS - 1:
                    raise
                log.warning(
                    "database connection lost while loading %d file(s) (%s); retrying",
                    len(group),
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
                )
                conn.close()
                time.sleep(min(2**attempt, RECONNECT_MAX_WAIT_S))
                conn = self._connect(attempts=RECONNECT_ATTEMPTS)
        return conn

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
            if row.status == "quarantined" and row.rows_total is None:
                zone.quarantine(self.landing, claimed, row.error or "rejected")
            else:
                zone.archive(self.landing, claimed)
            report.recovered += 1
        return left

    def _recover(self, conn: psycopg.Connection, report: IngestReport) -> list[zone.ClaimedFile]:
        """Finish files a previous run committed but did not move; retake stale claims."""
        paths = zone.processing_files(self.landing)
        if not paths:
            return []
        ledger = load.ledger_by_stored_name(conn, [p.name for p in paths])
        timeout = self.settings.ingest_claim_timeout_s
        retaken: list[zone.ClaimedFile] = []
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
                if row.status == "quarantined" and row.rows_total is None:
                    zone.quarantine(self.landing, claimed, row.error or "rejected")
                else:
                    zone.archive(self.landing, claimed)
                report.recovered += 1
                continue
            ours = row is not None and row.claimed_by == self.claimer
            if (
                not ours
                and zone.claim_age_s(path) < timeout
                and (row is None or (datetime.now(UTC) - row.claimed_at).total_seconds() < timeout)
            ):
                continue  # another run may still be working on it
            if not claimed.sha256:
                claimed.sha256 = zone.sha256_of(path)
            retaken.append(claimed)
        if retaken:
            load.record_claims(conn, retaken, self.flow_run_id, self.claimer)
            report.recovered += len(retaken)
            log.warning("took back %d file(s) claimed by a run that did not finish", len(retaken))
        return retaken

    def _claim_new(
        self, conn: psycopg.Connection, names: list[str] | None, limit: int
    ) -> list[zone.ClaimedFile]:
        if limit <= 0:
            return []
        if names is None:
            paths = zone.waiting_files(self.landing, limit)
        else:
            paths = [self.landing.incoming / name for name in names[:limit]]
        claimed = []
        for path in paths:
            taken = zone.claim(self.landing, path)
            if taken is not None:
                taken.sha256 = zone.sha256_of(taken.path)
                claimed.append(taken)
        load.record_claims(conn, claimed, self.flow_run_id, self.claimer)
        return claimed

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
            if claimed.sha256 in first and first[claimed.sha256] != claimed.ledger_id:
                duplicates[claimed.ledger_id] = first[claimed.sha256]
            elif claimed.sha256 in in_batch:
                deferred.append(claimed)
            else:
                in_batch.add(claimed.sha256)
                keep.append(claimed)
        load.mark_duplicates(conn, duplicates)
        for claimed in work:
            if claimed.ledger_id in duplicates:
                zone.archive(self.landing, claimed)
                self._emit(
                    report,
                    FileOutcome(
                        claimed.ledger_id,
                        claimed.original_name,
                        claimed.stored_name,
                        status="duplicate",
                        error=f"same content as ingest file {duplicates[claimed.ledger_id]}",
                    ),
                )
        return keep, deferred

    def _groups(self, work: list[zone.ClaimedFile]) -> Iterator[list[zone.ClaimedFile]]:
        group: list[zone.ClaimedFile] = []
        size = 0
        for claimed in work:
            group.append(claimed)
            size += claimed.size_bytes
            if size >= self.settings.ingest_group_bytes:
                yield group
                group, size = [], 0
        if group:
            yield group

    # -- one transaction -------------------------------------------------------------------

    def _load_group(
        self, conn: psycopg.Connection, group: list[zone.ClaimedFile], report: IngestReport
    ) -> None:
        outcomes = {
            f.ledger_id: FileOutcome(f.ledger_id, f.original_name, f.stored_name) for f in group
        }
        by_id = {f.ledger_id: f for f in group}
        rejected: dict[int, FileRejected] = {}
        with conn.transaction():
            batch = load.LoadGroup(conn, self.catalog)
            pending: list[tuple[int, pd.DataFrame | list[dict]]] = []
            pending_rows = 0
            flushed: set[int] = set()
            for claimed in group:
                outcome = outcomes[claimed.ledger_id]
                started = time.perf_counter()
                try:
                    for part in self._read_file(claimed, outcome):
                        if pending_rows >= self.settings.ingest_chunk_rows:
                            # The current file is not read to its end yet: its rows are
                            # staged, not copied directly (it may still turn out unreadable).
                            report.timings["parse_s"] += time.perf_counter() - started
                            flushed |= self._flush(
                                conn, batch, pending, outcomes, by_id, report, claimed.ledger_id
                            )
                            started = time.perf_counter()
                            pending, pending_rows = [], 0
                        pending.append((claimed.ledger_id, part))
                        pending_rows += len(part)
                    if pending_rows >= self.settings.ingest_chunk_rows:
                        report.timings["parse_s"] += time.perf_counter() - started
                        flushed |= self._flush(conn, batch, pending, outcomes, by_id, report)
                        started = time.perf_counter()
                        pending, pending_rows = [], 0
                except FileRejected as exc:
                    rejected[claimed.ledger_id] = exc
                    pending = [(i, part) for i, part in pending if i != claimed.ledger_id]
                    pending_rows = sum(len(part) for _, part in pending)
                    if claimed.ledger_id in flushed:
                        batch.discard(claimed.ledger_id)
                    outcome.status, outcome.error = "quarantined", exc.reason
                    outcome.rows_total = outcome.rows_duplicate = outcome.rows_quarantined = 0
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
                staged, inserted = counts.get(ledger_id, (0, 0))
                outcome.rows_loaded = inserted
                outcome.rows_duplicate += staged - inserted
                outcome.error = outcome.problem_summary()
                if outcome.rows_quarantined == 0:
                    outcome.status = "loaded"
                elif outcome.rows_loaded + outcome.rows_duplicate > 0:
                    outcome.status = "partial"
                else:
                    outcome.status = "quarantined"
                rows.append(self._ledger_row(outcome, rows_total=outcome.rows_total))
            batch.finish_files(rows)
        report.timings["load_s"] += time.perf_counter() - started
        # Committed: from here a crash only leaves files in processing/, which the next run
        # moves on by reading the ledger.
        for ledger_id, outcome in outcomes.items():
            claimed = by_id[ledger_id]
            if ledger_id in rejected:
                zone.quarantine(
                    self.landing, claimed, rejected[ledger_id].reason, **rejected[ledger_id].details
                )
            else:
                zone.archive(self.landing, claimed)
            self._emit(report, outcome)

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
            "error": outcome.error,
        }

    def _read_file(
        self, claimed: zone.ClaimedFile, outcome: FileOutcome
    ) -> Iterator[pd.DataFrame | list[dict]]:
        """The file's rows: one list of dicts for a small file, bounded frames for a large one."""
        outcome.format = detect_format(claimed.path)
        records = None
        if claimed.size_bytes <= SMALL_FILE_BYTES:
            records = read_small(claimed.path, outcome.format)
        if records is not None:
            if records:
                columns: dict[str, None] = {}
                for record in records:
                    columns.update(dict.fromkeys(record))
                self._require_columns(list(columns), records[0].get(PROBLEM))
                for record in records:
                    record[FILE] = claimed.ledger_id
                outcome.rows_total = len(records)
                yield records
        else:
            numeric = frozenset(self.catalog.sensor_names)
            chunks = iter_records(
                claimed.path, outcome.format, self.settings.ingest_chunk_rows, numeric
            )
            for chunk in chunks:
                if chunk.empty:
                    continue
                if outcome.rows_total == 0:
                    first = chunk[PROBLEM].iloc[0] if PROBLEM in chunk.columns else None
                    self._require_columns(list(chunk.columns), first)
                chunk[FILE] = claimed.ledger_id
                outcome.rows_total += len(chunk)
                yield chunk
        if outcome.rows_total == 0:
            raise FileRejected("the file has a header but no readings")

    def _require_columns(self, columns: list[str], first_problem: Any) -> None:
        data_columns = [c for c in columns if c not in (ROW, PROBLEM, "_line", FILE)]
        if not data_columns and first_problem:
            raise FileRejected(
                f"no line is a JSON object with readings ({first_problem}); send a JSON "
                "array of objects or one object per line"
            )
        required = ["equipment_id", "timestamp"] + [
            s.name for s in self.catalog.sensors.values() if s.required
        ]
        missing = [c for c in required if c not in columns]
        if not missing:
            return
        hint = ""
        if len(data_columns) == 1 and any(sep in data_columns[0] for sep in ";\t|"):
            hint = " The header looks like it uses another delimiter; use commas."
        shown = ", ".join(repr(c[:40]) for c in data_columns[:12]) or "no columns"
        raise FileRejected(
            f"required column(s) {', '.join(missing)} missing; the file has {shown}.{hint}",
            missing_columns=missing,
        )

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
        sensors = self.catalog.sensor_names
        prepared = prepare(raw, sensors, self.settings.ingest_naive_timestamps_utc)
        frame = prepared.frame
        repeated = self._exact_repeats(raw, frame, set(prepared.problems), outcomes)
        skip = frame.index.isin(list(prepared.problems) + repeated)
        checked = frame[~skip].reset_index(drop=True)
        original_index = frame.index[~skip].to_numpy()
        known = load.known_equipment(conn)
        if self.settings.ingest_unknown_equipment == "register":
            unknown = set(checked["equipment_id"].dropna().unique()) - known
            valid = {i for i in unknown if re.match(EQUIPMENT_ID_PATTERN, i)}
            registered = load.register_equipment(conn, valid, self.catalog)
            report.registered_equipment += registered
            known |= set(registered)
        mark_registered(checked, known)
        report.timings["parse_s"] += time.perf_counter() - started

        # Rows whose key is well formed are COPYed into raw.sensor_readings while Great
        # Expectations validates the batch in a second thread (PostgreSQL works on the other
        # core); the rows it rejects are taken out again before the commit.
        candidates = frame[~skip & frame["equipment_id"].notna() & frame["ts"].notna()]
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
            # Rows of a file not read to its end yet, and repeats of a key whose first row
            # may just have been rejected: staging and `on conflict` sort them out.
            batch.stage(good[~settled])
        for ledger_id, ids in good.groupby(FILE)["equipment_id"].unique().items():
            outcomes[int(ledger_id)].equipment_ids |= set(ids)
        batch.quarantine(self._quarantine_rows(raw, frame, bad_index, reasons, outcomes, by_id))
        report.timings["load_s"] += time.perf_counter() - started
        return {int(i) for i in raw[FILE].unique()}

    @staticmethod
    def _exact_repeats(
        raw: pd.DataFrame, frame: pd.DataFrame, skip: set[int], outcomes: dict[int, FileOutcome]
    ) -> list[int]:
        """Rows repeating an earlier row of the same file field for field: the same reading sent
        twice, a duplicate rather than an error. Different values for one timestamp are left
        for the suite's uniqueness expectation to quarantine."""
        same_key = frame.duplicated([FILE, "equipment_id", "ts"], keep=False)
        if not same_key.any():
            return []
        columns = [c for c in raw.columns if c not in (ROW, PROBLEM)]
        candidates = raw.loc[same_key, columns].astype("str")
        repeated = [int(i) for i in candidates.index[candidates.duplicated()] if i not in skip]
        for ledger_id, n in raw.loc[repeated, FILE].value_counts().items():
            outcomes[int(ledger_id)].rows_duplicate += int(n)
        return repeated

    @staticmethod
    def _quarantine_rows(
        raw: pd.DataFrame,
        frame: pd.DataFrame,
        bad_index: pd.Index,
        reasons: dict[int, list[str]],
        outcomes: dict[int, FileOutcome],
        by_id: dict[int, zone.ClaimedFile],
    ) -> list[tuple]:
        rows = []
        raw_columns = [c for c in raw.columns if c not in load.INTERNAL_COLUMNS]
        for index, row in raw.loc[bad_index].iterrows():
            ledger_id = int(row[FILE])
            values = {c: load.json_safe(row[c]) for c in raw_columns}
            equipment_id = frame.at[index, "equipment_id"]
            rows.append(
                (
                    ledger_id,
                    by_id[ledger_id].original_name,
                    int(row[ROW]),
                    None if pd.isna(equipment_id) else str(equipment_id),
                    reasons[index],
                    {k: v for k, v in values.items() if v is not None},
                )
            )
            outcome = outcomes[ledger_id]
            outcome.rows_quarantined += 1
            if outcome.first_problem is None:
                first = reasons[index][0].split(" [expect_")[0]
                outcome.first_problem = f"row {int(row[ROW])}: {first}"
        return rows

    # -- reporting ---------------------------------------------------------------------------

    def _emit(self, report: IngestReport, outcome: FileOutcome) -> None:
        report.files.append(outcome)
        log.info(json.dumps(outcome.log_record(), ensure_ascii=False))
        if self.on_file is not None:
            self.on_file(outcome)

    def _keep_result(self, result: dict[str, Any], when: datetime) -> None:
        """Keep the GX validation result so `emps quality docs` can render it."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.results_dir / f"{when:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}.json"
        path.write_text(json.dumps(result, default=str), encoding="utf-8")

    def _prune_results(self) -> None:
        if not self.results_dir.exists():
            return
        kept = sorted(self.results_dir.glob("*.json"))
        for old in kept[: -self.settings.ingest_keep_validations]:
            old.unlink(missing_ok=True)


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
    """True when a finished drop file waits in incoming/."""
    landing = zone.Landing((settings or get_settings()).landing_dir).ensure()
    return bool(zone.waiting_files(landing, 1))


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
        with path.open("rb") as source, partial.open("wb") as target:
            while block := source.read(1 << 20):
                target.write(block)
        os.replace(partial, landing.incoming / name)
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
