"""The `score-equipment` flow: after each dbt build, score every equipment that got new data,
raise the alerts of the predictions that turned HIGH or CRITICAL, then refresh the dashboard's
latest-prediction and last-reading tables."""

from __future__ import annotations

import time

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from emps import transform
from emps.alerting import outbox, rules
from emps.flows.run_log import prefect_log_forwarder
from emps.ingest.landing import files_waiting
from emps.ml import predict, registry
from emps.ml.dataset import read_latest_features
from emps.settings import get_settings

# While a backlog drains, the dashboard's tables are refreshed at most this far apart.
DASHBOARD_REFRESH_MAX_LAG_S = 60.0
_last_refresh = [float("-inf")]  # monotonic time of this process's last refresh


@task(name="load-champion", cache_policy=NONE)
def load_champion() -> predict.Champion:
    """The model behind the `champion` alias now; the cached one if the registry is down."""
    champion = predict.load_champion(get_settings())
    if champion.stale:
        get_run_logger().warning(
            "model registry unreachable: scoring with cached champion version %s",
            champion.version,
        )
    if champion.refused:
        get_run_logger().error(
            "%s; scoring with v%s, the last champion whose files verify",
            champion.refused,
            champion.version,
        )
    return champion


@task(name="note-champion-change", cache_policy=NONE)
def note_champion_change(version: str) -> bool:
    """Record a champion alias moved in the MLflow UI in ops.model_promotions."""
    return registry.note_champion_moves(version, get_settings())


@task(name="read-latest-features", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def read_features(equipment_ids: list[str] | None, only_unscored: bool) -> pd.DataFrame:
    """The latest dbt feature row of each equipment to score."""
    return read_latest_features(get_settings(), equipment_ids, only_unscored)


@task(name="predict-failures", cache_policy=NONE)
def predict_failures(champion: predict.Champion, features: pd.DataFrame) -> pd.DataFrame:
    """Failure probability, severity, health score, days until failure and explanation per row."""
    return predict.score_frame(champion.model, champion.version, features, get_settings())


@task(name="write-predictions", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def write_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """Insert the predictions into ops.predictions."""
    return predict.write_predictions(predictions, get_settings())


@task(name="find-severity-changes", cache_policy=NONE, retries=2, retry_delay_seconds=5)
def find_severity_changes(written: pd.DataFrame) -> pd.DataFrame:
    """The HIGH/CRITICAL predictions whose equipment had another severity before."""
    return predict.severity_changes(written, get_settings())


@task(name="raise-alerts", cache_policy=NONE, retries=1, retry_delay_seconds=2)
def raise_alerts(changed: pd.DataFrame) -> dict:
    """Open or escalate the alerts of this run's new HIGH/CRITICAL predictions and send their
    notifications now, in this run, instead of in the alert flow their events start (a process
    of its own, seconds later); that flow then finds them handled.

    While a notification waits for its retry (a mail server or SMS gateway down), delivery is
    left to the send-notifications flow: scoring never waits on a delivery timeout."""
    settings = get_settings()
    payloads = [event[2] for row in changed.to_dict("records") if (event := predict.event_for(row))]
    outcomes = [rules.process_prediction(payload, settings) for payload in payloads]
    alert_ids = sorted({o.alert_id for o in outcomes if o.notifications and o.alert_id})
    summary = {
        "alerts": sorted({o.alert_id for o in outcomes if o.alert_id}),
        "handled": [p["prediction_id"] for p in payloads],
        "sent": 0,
    }
    if alert_ids and outbox.retries_waiting(settings):
        get_run_logger().warning(
            "alerts %s queued; notifications wait for send-notifications: earlier ones are "
            "waiting to be retried (`emps notify status`)",
            alert_ids,
        )
    elif alert_ids:
        report = outbox.send_notifications(settings, alert_ids=alert_ids)
        for error in dict.fromkeys(report.errors):
            get_run_logger().error(error)
        summary["sent"] = report.sent
    return summary


@task(name="emit-prediction-events", cache_policy=NONE)
def emit_events(changed: pd.DataFrame, handled: list[int]) -> int:
    """One Prefect event per prediction that turned HIGH or CRITICAL, for automations; labelled
    `emps.alert-handled` true when this run raised its alert, false otherwise (the alert flow
    starts on those)."""
    return predict.emit_events_for(changed, set(handled))


@task(name="refresh-dashboard-state", cache_policy=NONE, retries=1, retry_delay_seconds=5)
def refresh_dashboard_state() -> float | None:
    """dbt build of the dashboard's latest-prediction and last-reading tables (selector
    `dashboard_state`), so the health pages show this run's predictions; its seconds, or None
    when the dashboard marts were never built here (nothing to refresh yet) or the refresh waits
    for the next batch: while drop files wait in the landing zone (a backlog draining, each
    batch scored right after the last), at most every DASHBOARD_REFRESH_MAX_LAG_S, which saves
    a dbt run per batch when the platform most needs the time."""
    settings = get_settings()
    logger = get_run_logger()
    since = time.monotonic() - _last_refresh[0]
    if since < DASHBOARD_REFRESH_MAX_LAG_S and files_waiting(settings.landing_dir):
        logger.info("dashboard refresh deferred to a later batch: drop files wait")
        return None
    summary = transform.refresh_dashboard_state(settings, on_log=prefect_log_forwarder())
    _last_refresh[0] = time.monotonic()
    if summary is None:
        logger.info("dashboard marts not built yet: nothing to refresh")
        return None
    return summary.seconds


@flow(name="score-equipment", log_prints=True)
def score_equipment(equipment_ids: list[str] | None = None, only_unscored: bool = True) -> dict:
    """Score the latest feature row of every equipment with new data using the champion model,
    write ops.predictions, raise the alerts of predictions that turned HIGH or CRITICAL and send
    their notifications, emit emps.prediction.high / emps.prediction.critical events, then
    refresh the dashboard's latest-prediction and last-reading tables (dbt selector
    `dashboard_state`)."""
    champion = load_champion()
    moved = (
        False
        if champion.stale
        else note_champion_change(champion.alias_version or champion.version)
    )
    features = read_features(equipment_ids, only_unscored)
    # pandas has no type information: a task returning a frame types as Any, which Prefect's
    # Task.__call__ overloads would read as a coroutine.
    written: pd.DataFrame = write_predictions(predict_failures(champion, features))
    changed = find_severity_changes(written)
    alerts = raise_alerts(changed, return_state=True)
    raised = alerts.result() if alerts.is_completed() else None
    if raised is None:  # the alert flow its events start, or the 5-minute catch-up, will
        get_run_logger().warning("alerts not raised in this run: %s", alerts.message)
    events = emit_events(changed, raised["handled"] if raised else [])
    refresh_s = refresh_dashboard_state()
    summary = {
        "model_version": champion.version,
        "scored": len(written),
        "by_severity": {k: int(v) for k, v in written["severity"].value_counts().items()},
        "events": events,
        "alerts": raised,
        "registry_unreachable": champion.stale,
        "champion_moved_in_ui": moved,
        "champion_refused": champion.refused,
        "dashboard_refresh_s": None if refresh_s is None else round(refresh_s, 2),
    }
    get_run_logger().info("scored %s equipment with model v%s", len(written), champion.version)
    return summary


if __name__ == "__main__":
    score_equipment()
