"""Retention: resolved alerts older than `alert_retention_days` are deleted (their notifications
go with them); month partitions of readings and predictions older than `sensor_retention_days`
are detached or dropped (`partition_retention_mode`), and those of the months ahead created
(`partitions_months_ahead`). Maintenance tasks are kept forever. Drop files archived as
received, daily report files and the local mail sink's messages older than their
`*_retention_days` are deleted (quarantined files stay: an admin may still release them)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from emps.db import Role, connect
from emps.migrate import ensure_partitions
from emps.settings import Settings, get_settings

PARTITIONED = ("raw.sensor_readings", "ops.predictions")


@dataclass(frozen=True)
class RetentionReport:
    alerts_deleted: int
    partitions_retired: list[str]
    mode: str
    partitions_created: int = 0
    files_deleted: dict[str, int] = field(default_factory=dict)


def cleanup(settings: Settings | None = None, now: datetime | None = None) -> RetentionReport:
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    alert_cutoff = now - timedelta(days=settings.alert_retention_days)
    partition_cutoff = now - timedelta(days=settings.sensor_retention_days)
    retired: list[str] = []
    with connect(Role.ALERTING, settings) as conn, conn.transaction():
        # Tasks keep their history (the training labels): their alert link is set to null.
        deleted = conn.execute(
            "delete from ops.alerts where status = 'resolved' and resolved_at < %s",
            (alert_cutoff,),
        ).rowcount
        conn.execute(
            "delete from ops.alert_prediction_log where processed_at < %s", (alert_cutoff,)
        )
        conn.execute(
            "select ops.record_audit('emps-retention', 'alert.cleanup', 'alert', null,"
            " jsonb_build_object('deleted', %s::int, 'resolved_before', %s::timestamptz))",
            (deleted, alert_cutoff),
        )
        # Alerts point at their latest prediction; a partition still referenced cannot be
        # detached, so old references are cut first (the alert keeps its message and severity).
        conn.execute(
            "update ops.alerts set prediction_id = null, prediction_ts = null"
            " where prediction_ts < date_trunc('month', %s::timestamptz)",
            (partition_cutoff,),
        )
        for table in PARTITIONED:
            rows = conn.execute(
                "select ops.retire_month_partitions(%s::regclass, %s, %s)",
                (table, partition_cutoff, settings.partition_retention_mode),
            ).fetchall()
            retired += [r[0] for r in rows]
        # The months ahead of this clock: a platform up for longer than the months `emps db
        # migrate` created would otherwise write into the DEFAULT partitions.
        created = ensure_partitions(
            conn,
            settings,
            start=now,
            end=now + timedelta(days=31 * settings.partitions_months_ahead),
        )
    files = prune_folders(settings, now)
    return RetentionReport(deleted, retired, settings.partition_retention_mode, created, files)


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
        "archive": (settings.landing_dir / "archive", 3, settings.archive_retention_days),
        "reports": (settings.reports_dir / "daily", 1, settings.reports_retention_days),
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
    cutoff_s = (now - timedelta(days=settings.mailbox_retention_days)).timestamp()
    mail = [p for p in (settings.home / "mailbox").glob("*.eml") if p.stat().st_mtime < cutoff_s]
    for path in mail:
        path.unlink(missing_ok=True)
    deleted["mailbox"] = len(mail)
    return deleted
