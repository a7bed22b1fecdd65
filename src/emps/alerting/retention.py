"""Retention, run daily by the cleanup flow, so that a platform bounded in disk runs for years:
- evidence is archived (emps.alerting.archive), not deleted: resolved alerts with their
  notifications past `alert_retention_days` (a summary stays for the Analytics counts), the
  audit log past `audit_retention_days`, delivered notifications of no alert and resolved
  operations alerts past `notification_retention_days`, quarantined rows past
  `quarantine_retention_days` (never an unresolved conflict or a row waiting for a retry);
- the ingest ledger past `ingest_ledger_retention_days` and expired sign-in tokens are deleted,
  and the HTTP API's ingest requests whose drop file left the ledger;
- predictions past `prediction_detail_days` are rolled up per equipment and hour;
- month partitions of readings and predictions past `sensor_retention_days` are detached or
  dropped (`partition_retention_mode`), those of the months ahead created
  (`partitions_months_ahead`);
- drop files archived as received, daily report files and the local mail sink's messages past
  their `*_retention_days` are deleted (quarantined files stay: an admin may still release them).
Failure and maintenance labels (raw.failure_events, ops.maintenance_tasks) are kept forever."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from emps.alerting import archive
from emps.db import Role, connect
from emps.migrate import ensure_partitions
from emps.settings import Settings, get_settings

PARTITIONED = ("raw.sensor_readings", "ops.predictions")
LEDGER_BATCH = 50_000


@dataclass(frozen=True)
class RetentionReport:
    archived: dict[str, int]
    partitions_retired: list[str]
    mode: str
    partitions_created: int = 0
    files_deleted: dict[str, int] = field(default_factory=dict)
    ledger_pruned: int = 0
    predictions_rolled_up: int = 0
    api_requests_pruned: int = 0


def archive_cutoffs(settings: Settings, now: datetime) -> dict[str, datetime]:
    days = {
        "alerts": settings.retention.alert_days,
        "notifications": settings.retention.notification_days,
        "operations_alerts": settings.retention.notification_days,
        "audit_log": settings.retention.audit_days,
        "quarantined_rows": settings.retention.quarantine_days,
    }
    return {kind: now - timedelta(days=n) for kind, n in days.items()}


def cleanup(settings: Settings | None = None, now: datetime | None = None) -> RetentionReport:
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    partition_cutoff = now - timedelta(days=settings.retention.sensor_days)
    archived = archive.archive_all(archive_cutoffs(settings, now), settings, now)
    retired: list[str] = []
    with connect(Role.ALERTING, settings) as conn:
        ledger_cutoff = now - timedelta(days=settings.retention.ingest_ledger_days)
        pruned = _in_batches(conn, "ops.prune_ingest_ledger", ledger_cutoff)
        # After the ledger: a request leaves with its drop file's outcome.
        requests_pruned = _in_batches(conn, "ops.prune_api_requests", ledger_cutoff)
        with conn.transaction():
            row = conn.execute(
                "select coalesce(sum(rolled_up), 0) from ops.roll_up_predictions(%s, %s)",
                (now - timedelta(days=settings.retention.prediction_detail_days), partition_cutoff),
            ).fetchone()
            assert row is not None  # an aggregate returns one row
            rolled = row[0]
        with conn.transaction():
            conn.execute(
                "delete from ops.alert_prediction_log where processed_at < %s",
                (now - timedelta(days=settings.retention.alert_days),),
            )
            conn.execute(
                "select ops.record_audit('emps-retention', 'retention.cleanup', 'retention',"
                " null, %s::jsonb)",
                (
                    json.dumps(
                        {
                            "archived": archived,
                            "ledger_pruned": pruned,
                            "api_requests_pruned": requests_pruned,
                            "rolled_up": int(rolled),
                        }
                    ),
                ),
            )
            # Alerts point at their latest prediction; a partition still referenced cannot be
            # detached, so old references are cut first (the alert keeps its message).
            conn.execute(
                "update ops.alerts set prediction_id = null, prediction_ts = null"
                " where prediction_ts < date_trunc('month', %s::timestamptz)",
                (partition_cutoff,),
            )
            for table in PARTITIONED:
                rows = conn.execute(
                    "select ops.retire_month_partitions(%s::regclass, %s, %s)",
                    (table, partition_cutoff, settings.retention.partition_mode),
                ).fetchall()
                retired += [r[0] for r in rows]
            # The months ahead of this clock: a platform up for longer than the months `emps
            # db migrate` created would otherwise write into the DEFAULT partitions.
            created = ensure_partitions(
                conn,
                settings,
                start=now,
                end=now + timedelta(days=31 * settings.database.partitions_months_ahead),
            )
    files = prune_folders(settings, now)
    return RetentionReport(
        archived,
        retired,
        settings.retention.partition_mode,
        created,
        files,
        pruned,
        int(rolled),
        requests_pruned,
    )


def _in_batches(conn, function: str, before: datetime) -> int:
    """Call a prune function until it takes less than a batch: a big fleet's day is more than
    a million ledger rows, each batch its own transaction."""
    total = 0
    while True:
        with conn.transaction():
            batch = conn.execute(f"select {function}(%s, %s)", (before, LEDGER_BATCH)).fetchone()[0]
        total += batch
        if batch < LEDGER_BATCH:
            return total


def _dated_folders(root: Path, depth: int) -> list[tuple[date, Path]]:
    """Folders named by their date under `root`: YYYY/MM/DD (depth 3) or YYYY-MM-DD (depth 1)."""
    found = []
    for folder in root.glob("/".join(["*"] * depth)):
        parts = folder.relative_to(root).parts
        try:
            day = date.fromisoformat("-".join(parts) if depth == 3 else parts[0])
        except ValueError:
            continue  # not one of ours: left alone
        if folder.is_dir():
            found.append((day, folder))
    return found


def _remove_tree(folder: Path) -> int:
    """Delete `folder` and everything in it (links themselves, never what they point to) in
    one walk; how many files went. A day of a big fleet's archive holds a million files."""
    files = 0
    for root, dirs, names in os.walk(folder, topdown=False):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(root, name))
                files += 1
        for name in dirs:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if os.path.islink(path):
                    os.unlink(path)
                else:
                    os.rmdir(path)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return files


def prune_folders(settings: Settings, now: datetime) -> dict[str, int]:
    """Delete the archive's day folders, the daily reports and the sink's mail past their
    retention; how many files went from each."""
    deleted: dict[str, int] = {}
    dated = {
        "archive": (settings.landing_dir / "archive", 3, settings.retention.archive_days),
        "reports": (settings.reports_dir / "daily", 1, settings.retention.reports_days),
    }
    for name, (root, depth, days) in dated.items():
        cutoff = (now - timedelta(days=days)).date()
        deleted[name] = 0
        for day, folder in _dated_folders(root, depth):
            if day < cutoff:
                deleted[name] += _remove_tree(folder)
                for parent in list(folder.relative_to(root).parents)[:-1]:  # MM, then YYYY
                    with contextlib.suppress(OSError):  # not empty: another day is kept
                        (root / parent).rmdir()
    cutoff_s = (now - timedelta(days=settings.retention.mailbox_days)).timestamp()
    mail = [p for p in (settings.home / "mailbox").glob("*.eml") if p.stat().st_mtime < cutoff_s]
    for path in mail:
        path.unlink(missing_ok=True)
    deleted["mailbox"] = len(mail)
    return deleted
