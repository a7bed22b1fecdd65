"""Retention: resolved alerts older than `alert_retention_days` are deleted (their notifications
go with them); month partitions of readings and predictions older than `sensor_retention_days`
are detached or dropped (`partition_retention_mode`). Maintenance tasks are kept forever."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from emps.db import Role, connect
from emps.settings import Settings, get_settings

PARTITIONED = ("raw.sensor_readings", "ops.predictions")


@dataclass(frozen=True)
class RetentionReport:
    alerts_deleted: int
    partitions_retired: list[str]
    mode: str


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
    return RetentionReport(deleted, retired, settings.partition_retention_mode)
