"""Every read the dashboard, the API and the reports make: small functions returning DataFrames.

All of them run as the read-only role over the dbt marts (`analytics.mart_*`, built from
dbt_project/models/marts/dashboard), with parameterised SQL only: the marts join and compute,
these functions filter, order and page. Filters given as None mean "all".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import pandas as pd
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from emps.alerting.backlog import Backlog
from emps.catalog import load_catalog
from emps.db import Role, database_url
from emps.domain import Severity
from emps.settings import Settings, get_settings

# The dbt marts the dashboard, the API and the reports read (dbt_project/models/marts/dashboard): views
# over staging and the ops tables (an acknowledgement shows at once), and two small tables
# refreshed after every scoring run (selector `dashboard_state`).
DASHBOARD_MARTS = (
    "mart_equipment_last_reading",
    "mart_equipment_latest_prediction",
    "mart_equipment_health",
    "mart_fleet_overview",
    "mart_alert_statistics",
    "mart_maintenance_schedule",
    "mart_equipment",
    "mart_alerts",
    "mart_maintenance_tasks",
    "mart_fleet_activity",
    "mart_thresholds",
    "mart_equipment_type_channels",
    "mart_sensor_readings",
    "mart_prediction_history",
    "mart_failures_caught",
    "mart_model_promotions",
    "mart_ingest_files",
    "mart_quarantined_rows",
    "mart_landing_ignored",
    "mart_archived_records",
    "mart_operations_alerts",
    "mart_users",
    "mart_audit_log",
    "mart_ingest_volume",
    "mart_notification_backlog",
)
ALERT_STATUSES = ("open", "acknowledged", "resolved")
# Charts need a few hundred points, not 130,000 one-minute readings: longer ranges are averaged.
MAX_TREND_POINTS = 1500
TASK_STATUSES_OPEN = ("scheduled", "in_progress")


@lru_cache(maxsize=8)
def _pool(url: str, timeout_ms: int) -> ConnectionPool:
    # Reused connections: a new one costs more than most of the dashboard's queries.
    return ConnectionPool(
        url,
        min_size=1,
        max_size=8,
        kwargs={
            "connect_timeout": 10,
            "application_name": "emps-dashboard",
            # A runaway dashboard query must not hold the database: cap it.
            "options": f"-c statement_timeout={timeout_ms}",
            "autocommit": True,
        },
        check=ConnectionPool.check_connection,  # survives a database restart
        name="emps-dashboard",
        open=True,
    )


def frame(
    query: str | sql.SQL | sql.Composed,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Run one read-only query and return its rows as a DataFrame (columns even when empty)."""
    settings = settings or get_settings()
    pool = _pool(database_url(Role.READER, settings), settings.database.query_timeout_ms)
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute(query, params or {})
        columns = [d.name for d in cur.description or ()]
        rows = cur.fetchall()
    return pd.DataFrame(rows, columns=columns)


def row_dicts(
    query: str | sql.SQL | sql.Composed,
    params: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Run one read-only query and return its rows as dicts, values as the database gave them
    (no NaN for null, integers kept): for text, mail and CSV rather than tables and charts."""
    settings = settings or get_settings()
    pool = _pool(database_url(Role.READER, settings), settings.database.query_timeout_ms)
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params or {})
        return cur.fetchall()


def _list(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


# -- fleet ------------------------------------------------------------------------------------
def sites(settings: Settings | None = None) -> list[str]:
    return frame(
        "select distinct site from analytics.mart_equipment order by site", settings=settings
    )["site"].tolist()


def equipment_types(settings: Settings | None = None) -> list[str]:
    return frame(
        "select distinct equipment_type from analytics.mart_equipment order by equipment_type",
        settings=settings,
    )["equipment_type"].tolist()


def equipment_ids(settings: Settings | None = None) -> list[str]:
    return frame(
        "select equipment_id from analytics.mart_equipment order by equipment_id", settings=settings
    )["equipment_id"].tolist()


def fleet_health(
    sites: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    severities: Sequence[str] | None = None,
    settings: Settings | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> pd.DataFrame:
    """One row per equipment (analytics.mart_equipment_health), most at risk first.

    Severity "UNSCORED" selects equipment without a prediction yet; `limit` keeps the first rows
    after skipping `offset` (a page).
    """
    return frame(
        """
        select equipment_id, equipment_type, site, health_score, severity, failure_probability,
               days_until_failure, remaining_life, life_unit, remaining_life_beyond, assessment,
               assessment_reason, last_severity, last_reading_at, minutes_since_last_reading,
               open_alert_id, open_alert_severity, open_alert_status,
               next_task_id, next_task_type, next_task_date, model_version, predicted_at,
               prediction_as_of, last_reading_as_of
        from analytics.mart_equipment_health
        where (%(sites)s::text[] is null or site = any(%(sites)s))
          and (%(types)s::text[] is null or equipment_type = any(%(types)s))
          and (%(severities)s::text[] is null or coalesce(severity, 'UNSCORED') = any(%(severities)s))
        order by failure_probability desc nulls last, equipment_id
        limit %(limit)s offset %(offset)s
        """,
        {
            "sites": _list(sites),
            "types": _list(types),
            "severities": _list(severities),
            "limit": limit,
            "offset": offset,
        },
        settings,
    )


def fleet_summary(
    sites: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    severities: Sequence[str] | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Equipment counts per site, type, severity, health decile, silent-or-not and assessment
    (analytics.mart_fleet_overview: for counts, charts), and when the predictions and last
    readings they count were refreshed (`prediction_as_of`, `last_reading_as_of`: the latest
    refresh that changed a row of the group)."""
    return frame(
        """
        select site, equipment_type, severity, health_bucket, is_silent as silent, assessment,
               equipment, health_sum, prediction_as_of, last_reading_as_of
        from analytics.mart_fleet_overview
        where (%(sites)s::text[] is null or site = any(%(sites)s))
          and (%(types)s::text[] is null or equipment_type = any(%(types)s))
          and (%(severities)s::text[] is null or severity = any(%(severities)s))
        """,
        {"sites": _list(sites), "types": _list(types), "severities": _list(severities)},
        settings,
    )


def activity_summary(settings: Settings | None = None) -> dict[str, int]:
    """Active alerts by severity and predictions written in the last hour
    (analytics.mart_fleet_activity)."""
    row = frame("select * from analytics.mart_fleet_activity", settings=settings).iloc[0]
    return {k: int(v) for k, v in row.items()}


def thresholds(settings: Settings | None = None) -> dict[str, float]:
    """Severity bands and the silent-equipment limit in force (analytics.mart_thresholds over
    ops.thresholds, editable by admins; the settings where a key has no row)."""
    settings = settings or get_settings()
    values = {
        s.threshold_key: getattr(settings.thresholds, s.threshold_key) for s in Severity.banded()
    }
    values["silent_minutes"] = float(settings.thresholds.silent_minutes)
    rows = frame("select key, value from analytics.mart_thresholds", settings=settings)
    values.update(dict(zip(rows["key"], rows["value"].astype(float), strict=True)))
    return values


def thresholds_table(settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        "select key, value, description, updated_at, updated_by from analytics.mart_thresholds "
        "order by key",
        settings=settings,
    )


# -- one equipment ----------------------------------------------------------------------------
def equipment_health(equipment_id: str, settings: Settings | None = None) -> dict | None:
    rows = frame(
        "select * from analytics.mart_equipment_health where equipment_id = %(id)s",
        {"id": equipment_id},
        settings,
    )
    return None if rows.empty else rows.iloc[0].to_dict()


def envelopes(equipment_type: str, settings: Settings | None = None) -> pd.DataFrame:
    """Per channel this equipment type has: unit, role, normal band (when the catalog gives
    one) and valid range; sensors first."""
    return frame(
        """
        select sensor, unit, description, role, normal_low, normal_high, valid_min, valid_max
        from analytics.mart_equipment_type_channels
        where equipment_type = %(type)s
        order by role, sensor
        """,
        {"type": equipment_type},
        settings,
    )


def _bucket_seconds(start: datetime, end: datetime, expected_interval_s: int = 60) -> int:
    span = max((end - start).total_seconds(), 1)
    return max(expected_interval_s, int(span // MAX_TREND_POINTS) + 1)


def sensor_trend(
    equipment_id: str, start: datetime, end: datetime, settings: Settings | None = None
) -> pd.DataFrame:
    """Readings of every catalog channel over [start, end), averaged into at most ~1500 points."""
    settings = settings or get_settings()
    sensors = load_catalog(settings.catalog_path).channel_names
    averages = sql.SQL(", ").join(
        sql.SQL("avg({col}) as {col}").format(col=sql.Identifier(s)) for s in sensors
    )
    query = sql.SQL(
        """
        select date_bin(make_interval(secs => %(bucket)s), ts, %(start)s) as ts, {averages}
        from analytics.mart_sensor_readings
        where equipment_id = %(id)s and ts >= %(start)s and ts < %(end)s
        group by 1 order by 1
        """
    ).format(averages=averages)
    params = {
        "id": equipment_id,
        "start": start,
        "end": end,
        "bucket": _bucket_seconds(start, end),
    }
    return frame(query, params, settings)


def prediction_history(
    equipment_id: str, start: datetime, end: datetime, settings: Settings | None = None
) -> pd.DataFrame:
    """Failure probability over time (the worst per time bucket) and the model version used;
    months past the detail window come from their hourly roll-up."""
    return frame(
        """
        select date_bin(make_interval(secs => %(bucket)s), ts, %(start)s) as ts,
               max(failure_probability) as failure_probability,
               min(health_score) as health_score,
               max(model_version) as model_version,
               sum(predictions)::bigint as predictions
        from analytics.mart_prediction_history
        where equipment_id = %(id)s and ts >= %(start)s and ts < %(end)s
        group by 1 order by 1
        """,
        {"id": equipment_id, "start": start, "end": end, "bucket": _bucket_seconds(start, end)},
        settings,
    )


def latest_readings(
    equipment_id: str, limit: int = 1, settings: Settings | None = None
) -> pd.DataFrame:
    """The newest `limit` readings of an equipment, newest first: every catalog channel, and
    when each was ingested."""
    settings = settings or get_settings()
    channels = load_catalog(settings.catalog_path).channel_names
    query = sql.SQL(
        """
        select ts, {channels}, ingested_at
        from analytics.mart_sensor_readings
        where equipment_id = %(id)s
        order by ts desc limit %(limit)s
        """
    ).format(channels=sql.SQL(", ").join(sql.Identifier(c) for c in channels))
    return frame(query, {"id": equipment_id, "limit": limit}, settings)


def latest_prediction(equipment_id: str, settings: Settings | None = None) -> dict | None:
    """The equipment's latest prediction (analytics.mart_equipment_latest_prediction), with the
    sensors that contributed most; None when it was never scored."""
    rows = frame(
        """
        select prediction_id, equipment_id, ts, predicted_at, failure_probability, health_score,
               severity, days_until_failure, remaining_life, life_unit, remaining_life_beyond,
               assessment, assessment_reason, model_version, explanation,
               refreshed_at as as_of
        from analytics.mart_equipment_latest_prediction where equipment_id = %(id)s
        """,
        {"id": equipment_id},
        settings,
    )
    return None if rows.empty else rows.iloc[0].to_dict()


def maintenance_history(equipment_id: str, settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        """
        select task_id, task_type, priority, status, scheduled_date, completed_date,
               outcome, alert_id, created_by, notes
        from analytics.mart_maintenance_tasks where equipment_id = %(id)s
        order by scheduled_date desc limit 200
        """,
        {"id": equipment_id},
        settings,
    )


# -- alerts -----------------------------------------------------------------------------------
def alerts(
    statuses: Sequence[str] | None = None,
    severities: Sequence[str] | None = None,
    sites: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    equipment_id: str | None = None,
    limit: int = 2000,
    settings: Settings | None = None,
    offset: int = 0,
) -> pd.DataFrame:
    """Alerts newest first, with their equipment's site and minutes to acknowledge / resolve;
    `limit` rows after skipping `offset` (a page)."""
    return frame(
        """
        select alert_id, equipment_id, equipment_type, site, severity, status, message,
               created_at, acknowledged_at, acknowledged_by, minutes_to_acknowledge,
               resolved_at, resolved_by, minutes_to_resolve, resolution_note, escalation_level
        from analytics.mart_alerts
        where (%(statuses)s::text[] is null or status = any(%(statuses)s))
          and (%(severities)s::text[] is null or severity = any(%(severities)s))
          and (%(sites)s::text[] is null or site = any(%(sites)s))
          and (%(since)s::timestamptz is null or created_at >= %(since)s)
          and (%(until)s::timestamptz is null or created_at < %(until)s)
          and (%(equipment_id)s::text is null or equipment_id = %(equipment_id)s)
        order by created_at desc, alert_id desc
        limit %(limit)s offset %(offset)s
        """,
        {
            "statuses": _list(statuses),
            "severities": _list(severities),
            "sites": _list(sites),
            "since": since,
            "until": until,
            "equipment_id": equipment_id,
            "limit": limit,
            "offset": offset,
        },
        settings,
    )


def open_alerts(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Alerts not resolved, most severe first, oldest first within a band."""
    return row_dicts(
        """
        select alert_id, equipment_id, equipment_type, site, severity, status, created_at,
               message
        from analytics.mart_alerts
        where status <> 'resolved'
        order by severity_rank desc, created_at, alert_id
        """,
        settings=settings,
    )


# -- maintenance ------------------------------------------------------------------------------
def notification_backlog(settings: Settings | None = None) -> Backlog:
    """Notifications due and not yet delivered and how long the oldest has waited
    (analytics.mart_notification_backlog: no recipient or error, the read-only role sees
    delivery states only)."""
    row = row_dicts(
        "select waiting, oldest_age_s, oldest_notification_id "
        "from analytics.mart_notification_backlog",
        settings=settings,
    )[0]
    return Backlog(
        waiting=int(row["waiting"]),
        oldest_age_s=float(row["oldest_age_s"]),
        oldest_id=row["oldest_notification_id"],
        oldest_recipient=None,
        last_error=None,
    )


def maintenance_schedule(
    sites: Sequence[str] | None = None,
    until: datetime | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Tasks not completed or cancelled (analytics.mart_maintenance_schedule), soonest first."""
    rows = frame(
        """
        select * from analytics.mart_maintenance_schedule
        where (%(sites)s::text[] is null or site = any(%(sites)s))
          and (%(until)s::timestamptz is null or scheduled_date < %(until)s)
        order by scheduled_date, equipment_id
        """,
        {"sites": _list(sites), "until": until},
        settings,
    )
    if "task_id" not in rows.columns and "id" in rows.columns:
        rows = rows.rename(columns={"id": "task_id"})
    return rows


def tasks_due(until: datetime, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Tasks not completed or cancelled that are due before `until` (overdue ones included),
    soonest first, the most urgent first among those due together."""
    return row_dicts(
        """
        select task_id, equipment_id, equipment_type, site, task_type, priority, status,
               scheduled_date, alert_id
        from analytics.mart_maintenance_schedule
        where scheduled_date < %(until)s
        order by scheduled_date, priority
        """,
        {"until": until},
        settings,
    )


def tasks(
    start: datetime, end: datetime, sites: Sequence[str] | None = None, settings=None
) -> pd.DataFrame:
    """Every task scheduled or completed in [start, end), any status."""
    return frame(
        """
        select task_id, equipment_id, equipment_type, site, task_type, priority, status,
               scheduled_date, completed_date, outcome, alert_id
        from analytics.mart_maintenance_tasks
        where ((scheduled_date >= %(start)s and scheduled_date < %(end)s)
               or (completed_date >= %(start)s and completed_date < %(end)s))
          and (%(sites)s::text[] is null or site = any(%(sites)s))
        order by scheduled_date
        """,
        {"start": start, "end": end, "sites": _list(sites)},
        settings,
    )


# -- analytics --------------------------------------------------------------------------------
def alert_statistics(
    start: datetime, end: datetime, settings: Settings | None = None
) -> pd.DataFrame:
    """Per day, severity and status: alert count, mean minutes to acknowledge and to resolve."""
    return frame(
        """
        select * from analytics.mart_alert_statistics
        where day >= %(start)s and day < %(end)s
        order by day, severity, status
        """,
        {"start": start, "end": end},
        settings,
    )


def failures_caught(
    start: datetime, end: datetime, settings: Settings | None = None
) -> pd.DataFrame:
    """Each failure in the range, whether it happened before the first champion was promoted
    (no model could have warned of it), and whether a live alert warned about it within the
    horizon before (analytics.mart_failures_caught)."""
    return frame(
        """
        select equipment_id, equipment_type, site, failed_at, failure_mode, before_first_model,
               first_alert_at, caught, warning_hours
        from analytics.mart_failures_caught
        where failed_at >= %(start)s and failed_at < %(end)s
        order by failed_at
        """,
        {"start": start, "end": end},
        settings,
    )


def model_promotions(settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        """
        select promoted_at, model_name, alias, from_version, to_version, promoted_by, reason,
               metrics
        from analytics.mart_model_promotions order by promoted_at
        """,
        settings=settings,
    )


def ingest_volume(start: datetime, end: datetime, settings: Settings | None = None) -> pd.DataFrame:
    """Per UTC day from the one holding `start` to `end`: files received, rows loaded /
    duplicate / quarantined, quarantine rate (analytics.mart_ingest_volume, the days retention
    pruned from the ledger included)."""
    return frame(
        """
        select day, files, files_rejected, rows_total, rows_loaded, rows_duplicate,
               rows_quarantined, quarantine_rate
        from analytics.mart_ingest_volume
        where day >= date_trunc('day', %(start)s::timestamptz, 'UTC') and day < %(end)s
        order by day
        """,
        {"start": start, "end": end},
        settings,
    )


def ingest_files(
    statuses: Sequence[str] | None = None, limit: int = 500, settings: Settings | None = None
) -> pd.DataFrame:
    return frame(
        """
        select ingest_file_id as id, file_name, status, format, size_bytes, received_at,
               finished_at, rows_total, rows_loaded, rows_duplicate, rows_quarantined,
               rows_conflict, attempts, error, warning_text as warnings
        from analytics.mart_ingest_files
        where (%(statuses)s::text[] is null or status = any(%(statuses)s))
        order by received_at desc limit %(limit)s
        """,
        {"statuses": _list(statuses), "limit": limit},
        settings,
    )


def quarantined_rows(
    kinds: Sequence[str] | None = None,
    open_only: bool = False,
    limit: int = 500,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Quarantined rows other than conflicts (those have `conflicts`), newest first."""
    return frame(
        """
        select quarantined_row_id as id, file_name, row_number, equipment_id, kind, reasons,
               raw_values, quarantined_at, resolution, resolved_by, retry_requested_by,
               retry_requested_at
        from analytics.mart_quarantined_rows
        where kind <> 'conflict'
          and (%(kinds)s::text[] is null or kind = any(%(kinds)s))
          and (not %(open_only)s or resolution is null)
        order by quarantined_at desc, quarantined_row_id limit %(limit)s
        """,
        {"kinds": _list(kinds), "open_only": open_only, "limit": limit},
        settings,
    )


def conflicts(
    open_only: bool = True, limit: int = 500, settings: Settings | None = None
) -> pd.DataFrame:
    """Re-sent readings whose values differ from the stored ones: both versions per row."""
    return frame(
        """
        select quarantined_row_id as id, file_name, row_number, equipment_id, reading_time,
               received, stored_values as stored, quarantined_at, resolution, resolved_by,
               resolved_at, resolution_note
        from analytics.mart_quarantined_rows
        where kind = 'conflict' and (not %(open_only)s or resolution is null)
        order by quarantined_at desc, quarantined_row_id limit %(limit)s
        """,
        {"open_only": open_only, "limit": limit},
        settings,
    )


def landing_ignored(settings: Settings | None = None) -> pd.DataFrame:
    """Entries of landing/incoming ingest never claims, old enough to look forgotten."""
    return frame(
        "select path, why, size_bytes, modified_at, first_seen_at "
        "from analytics.mart_landing_ignored order by modified_at",
        settings=settings,
    )


def archived_records(settings: Settings | None = None) -> pd.DataFrame:
    """Per kind, what retention archived to files under <home>/records/
    (analytics.mart_archived_records)."""
    return frame(
        """
        select kind, files, rows, bytes, first_archived, last_archived, everything_before
        from analytics.mart_archived_records order by kind
        """,
        settings=settings,
    )


def operations_alerts(open_only: bool = True, settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        """
        select operations_alert_id as id, rule, subject, status, summary, opened_at,
               last_seen_at, resolved_at, notifications
        from analytics.mart_operations_alerts
        where not %(open_only)s or status = 'open'
        order by opened_at desc limit 200
        """,
        {"open_only": open_only},
        settings,
    )


# -- administration ---------------------------------------------------------------------------
def users(settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        "select username, display_name, role, active, created_at, last_sign_in_at "
        "from analytics.mart_users order by username",
        settings=settings,
    )


def audit_log(limit: int = 200, settings: Settings | None = None) -> pd.DataFrame:
    return frame(
        """
        select at, actor, actor_role, action, target_type, target_id, details
        from analytics.mart_audit_log order by at desc, audit_id desc limit %(limit)s
        """,
        {"limit": limit},
        settings,
    )


def default_range(days: int = 30) -> tuple[datetime, datetime]:
    from datetime import UTC

    end = datetime.now(UTC)
    return end - timedelta(days=days), end
