"""Alert flows: turn prediction events into alerts, tasks and notifications; deliver the outbox;
escalate unacknowledged CRITICAL alerts; send the daily maintenance report; apply retention.

Thin wrappers: the rules live in emps.alerting and are tested there.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from emps import daily_report
from emps.alerting import backlog, operations, outbox, retention, rules
from emps.settings import get_settings


@task(name="record-alert", cache_policy=NONE, retries=2, retry_delay_seconds=[2, 10])
def record_alert(payload: dict[str, Any]) -> rules.AlertOutcome:
    """Open, escalate or refresh the equipment's alert, its task and outbox rows (one transaction)."""
    return rules.process_prediction(payload, get_settings())


@task(name="catch-up-predictions", cache_policy=NONE, retries=2, retry_delay_seconds=[2, 10])
def catch_up() -> list[rules.AlertOutcome]:
    """Handle HIGH/CRITICAL predictions whose own event run was lost or has not started yet."""
    return rules.process_pending(get_settings())


@task(name="deliver-notifications", cache_policy=NONE)
def deliver_notifications(alert_ids: list[int] | None = None, limit: int = 500) -> dict:
    """Send due outbox rows. No task retries: failed rows are retried by the outbox's backoff.
    Logs an error while a due notification has waited longer than EMPS_NOTIFY_PENDING_ALERT_S:
    mail that cannot go out cannot announce itself by mail."""
    settings = get_settings()
    report = outbox.send_notifications(settings, limit=limit, alert_ids=alert_ids)
    logger = get_run_logger()
    for error in dict.fromkeys(report.errors):  # one line per distinct error, not per row
        logger.error(error)
    logger.info("notifications: %s", report)
    waiting = backlog.read_backlog(settings)
    overdue = waiting.oldest_age_s > settings.notifications.pending_alert_s
    if overdue:
        logger.error("notifications are not going out: %s", waiting.describe(settings))
    return {**asdict(report), "oldest_pending_s": waiting.oldest_age_s, "overdue": overdue}


@task(name="escalate-unacknowledged", cache_policy=NONE, retries=2, retry_delay_seconds=10)
def escalate() -> rules.EscalationReport:
    """Send unacknowledged CRITICAL alerts to the next recipient group."""
    return rules.escalate_unacknowledged(get_settings())


@task(name="auto-resolve-alerts", cache_policy=NONE, retries=2, retry_delay_seconds=10)
def auto_resolve() -> list[int]:
    """Resolve alerts whose task is done or whose equipment has been healthy long enough."""
    return rules.auto_resolve(get_settings())


@task(name="evaluate-operations-alerts", cache_policy=NONE)
def evaluate_operations() -> operations.OperationsReport:
    """Run the operations rules (emps.alerting.operations): open, refresh or resolve alerts about
    the platform itself and queue their mail to the operations recipients."""
    report = operations.evaluate(get_settings())
    logger = get_run_logger()
    for name, error in report.failed.items():
        logger.error("operations rule %s could not run: %s", name, error)
    if report.opened or report.resolved:
        logger.info("operations alerts opened %s, resolved %s", report.opened, report.resolved)
    return report


@task(name="queue-daily-report", cache_policy=NONE, retries=1, retry_delay_seconds=60)
def queue_report() -> daily_report.DailyReport:
    """Write the day's report files and queue one email per report recipient."""
    return daily_report.queue_daily_report(get_settings())


@task(name="apply-retention", cache_policy=NONE)
def apply_retention() -> retention.RetentionReport:
    """Archive old evidence, prune the ledger, roll up old predictions, retire month
    partitions past the retention and create the months ahead; prune the folders."""
    return retention.cleanup(get_settings())


@flow(name="process-prediction-alerts")
def process_prediction_alerts(payload: dict[str, Any], event_id: str | None = None) -> dict:
    """Triggered by emps.prediction.high / emps.prediction.critical: one alert per equipment,
    escalated on a worse prediction, a maintenance task, and its notifications sent at once."""
    logger = get_run_logger()
    outcome = record_alert(payload)
    logger.info(
        "event %s for %s: alert %s %s",
        event_id,
        payload.get("equipment_id"),
        outcome.alert_id,
        outcome.action,
    )
    # Whichever run starts first also handles the predictions still waiting for theirs, so a
    # burst of events (each run a new process) or a lost event does not delay an alert.
    caught_up = catch_up()
    to_send = sorted(
        {o.alert_id for o in [outcome, *caught_up] if o.notifications and o.alert_id is not None}
    )
    sent = deliver_notifications(to_send) if to_send else None
    return {**asdict(outcome), "caught_up": len(caught_up), "delivery": sent}


@flow(name="send-notifications")
def send_notifications(limit: int = 500) -> dict:
    """Deliver every due outbox row (retries after SMTP/gateway outages, quiet-hour releases).
    Fails the run, without retrying, when nothing could be sent because of a delivery error, or
    while a due notification has waited longer than EMPS_NOTIFY_PENDING_ALERT_S (a failed run
    is seen in the Prefect UI and by its automations, which need no mail to be heard)."""
    report = deliver_notifications(None, limit)
    if report["errors"] and report["sent"] == 0:
        raise RuntimeError(report["errors"][0])
    if report["overdue"]:
        minutes = report["oldest_pending_s"] / 60
        raise RuntimeError(
            f"a notification has waited {minutes:.0f} min to be sent"
            f" (EMPS_NOTIFY_PENDING_ALERT_S={get_settings().notifications.pending_alert_s:g});"
            " `emps notify status` shows the errors"
        )
    return report


@flow(name="check-critical-alerts")
def check_critical_alerts() -> dict:
    """Every 5 minutes: handle predictions whose event was lost, escalate CRITICAL alerts nobody
    acknowledged, auto-resolve, evaluate the operations alerts (the platform's own trouble),
    deliver."""
    caught_up = catch_up()
    escalated = escalate()
    resolved = auto_resolve()
    ops = evaluate_operations()
    to_send = sorted(
        {o.alert_id for o in caught_up if o.notifications and o.alert_id is not None}
        | set(escalated.escalated)
    )
    delivery = deliver_notifications(to_send) if to_send else None
    if ops.notifications:  # operations mail has no alert id: deliver everything due
        delivery = deliver_notifications(None)
    return {
        "caught_up": len(caught_up),
        "escalated": escalated.escalated,
        "resolved": resolved,
        "operations": {"opened": ops.opened, "resolved": ops.resolved, "failed": ops.failed},
        "delivery": delivery,
    }


@flow(name="send-daily-maintenance-report")
def send_daily_maintenance_report() -> dict:
    """08:00: the day's tasks, open alerts and fleet health by email, PDF and CSV attached."""
    report = queue_report()
    delivery = deliver_notifications(None)
    return {
        "day": report.day,
        "files": [str(p) for p in report.files],
        "queued": report.queued,
        "delivery": delivery,
    }


@flow(name="cleanup-old-alerts")
def cleanup_old_alerts() -> dict:
    """02:00: everything past its retention archived, pruned or rolled up (emps.alerting.
    retention); old sensor and prediction partitions retired, the months ahead created."""
    report = apply_retention()
    get_run_logger().info(
        "retention: archived %s; %s ledger rows and %s API ingest requests pruned; %s"
        " predictions rolled up hourly;"
        " partitions %s: %s; %s month partitions created ahead; files deleted: %s",
        report.archived or "nothing (another cleanup is archiving)",
        report.ledger_pruned,
        report.api_requests_pruned,
        report.predictions_rolled_up,
        report.mode,
        report.partitions_retired or "none",
        report.partitions_created,
        report.files_deleted,
    )
    return asdict(report)
