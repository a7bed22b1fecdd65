"""Prometheus metrics, read from the database at scrape time: small queries (the ingest counters
are kept by the database as the ledger changes), nothing to keep in sync here."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from emps import disk
from emps.alerting.backlog import oldest_pending_age_s
from emps.alerting.operations import registered_rules
from emps.db import Role, connect
from emps.domain import Severity
from emps.settings import Settings, get_settings

if TYPE_CHECKING:
    import httpx

QUERIES = {
    # Kept by triggers on the ledger (migration 0141): no scan of raw.ingest_files per scrape,
    # and pruning the ledger does not take the counters back.
    "ingest": """
        select rows_loaded, rows_quarantined, files_quarantined, files_duplicate, rows_conflict
        from ops.ingest_totals
    """,
    "operations": """
        select rule, count(*) from ops.operations_alerts where status = 'open' group by rule
    """,
    "alerts": """
        select severity, count(*) from ops.alerts where status <> 'resolved' group by severity
    """,
    "backlog": """
        select status, count(*) from ops.notification_deliveries
        where status in ('pending', 'sending', 'failed', 'dead') group by status
    """,
    "predictions": """
        select count(*) from ops.predictions where ts > now() - interval '1 hour'
    """,
    "freshness": """
        select count(*), coalesce(max(extract(epoch from now() - ingested_at)), 0)
        from (select max(ingested_at) as ingested_at from raw.sensor_readings
              where ingested_at > now() - interval '1 day') recent
    """,
}


class PlatformCollector(Collector):
    def __init__(
        self,
        settings: Settings,
        prefect_api: str | None = None,
        prefect_auth: str | None = None,
    ):
        self.settings = settings
        self.prefect_api = prefect_api
        self.prefect_auth = prefect_auth
        # One client: its CSRF token is reused between scrapes.
        self._prefect: httpx.Client | None = None

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("emps_database_up", "1 when the metrics query reached the database")
        try:
            with connect(Role.READER, self.settings) as conn:
                yield from self._collect(conn)
            up.add_metric([], 1)
        except Exception:  # a scrape must still answer when the database is down
            up.add_metric([], 0)
        yield up
        duration = GaugeMetricFamily("emps_scrape_seconds", "Time spent reading the metrics")
        duration.add_metric([], time.monotonic() - started)
        yield duration
        yield from self._flow_durations()

    def _collect(self, conn) -> Iterator[Metric]:
        loaded, rows_quarantined, files_quarantined, duplicates, conflicts = conn.execute(
            QUERIES["ingest"]
        ).fetchone()
        readings = CounterMetricFamily(
            "emps_readings_ingested", "Readings loaded by the ingest flow"
        )
        readings.add_metric([], float(loaded))
        yield readings
        rows_q = CounterMetricFamily("emps_rows_quarantined", "Rows quarantined by validation")
        rows_q.add_metric([], float(rows_quarantined))
        yield rows_q
        files_q = CounterMetricFamily("emps_files_quarantined", "Drop files that could not be read")
        files_q.add_metric([], float(files_quarantined))
        yield files_q
        dup = CounterMetricFamily("emps_files_duplicate", "Drop files seen twice (loaded once)")
        dup.add_metric([], float(duplicates))
        yield dup
        conflict = CounterMetricFamily(
            "emps_rows_conflict", "Re-sent readings whose values differ from the stored ones"
        )
        conflict.add_metric([], float(conflicts))
        yield conflict

        # One series per operations rule, 0 while it finds nothing (emps.alerting.operations).
        open_alerts = GaugeMetricFamily(
            "emps_operations_alerts_open", "Open operations alerts, per rule", labels=["rule"]
        )
        counts = dict(conn.execute(QUERIES["operations"]).fetchall())
        for name in sorted({rule.name for rule in registered_rules()} | set(counts)):
            open_alerts.add_metric([name], float(counts.get(name, 0)))
        yield open_alerts

        alerts = GaugeMetricFamily(
            "emps_active_alerts", "Open or acknowledged alerts", labels=["severity"]
        )
        counts = dict(conn.execute(QUERIES["alerts"]).fetchall())
        for severity in Severity:
            alerts.add_metric([severity.value], float(counts.get(severity.value, 0)))
        yield alerts

        backlog = GaugeMetricFamily(
            "emps_notification_backlog", "Notifications not yet delivered", labels=["status"]
        )
        counts = dict(conn.execute(QUERIES["backlog"]).fetchall())
        for status in ("pending", "sending", "failed", "dead"):
            backlog.add_metric([status], float(counts.get(status, 0)))
        yield backlog

        oldest = GaugeMetricFamily(
            "emps_notification_oldest_pending_seconds",
            "How long the oldest due notification not yet sent (nor dead) has waited; 0 when none",
        )
        oldest.add_metric([], oldest_pending_age_s(conn=conn))
        yield oldest
        threshold = GaugeMetricFamily(
            "emps_notification_pending_alert_seconds",
            "EMPS_NOTIFY_PENDING_ALERT_S: the oldest pending notification's age that should alert",
        )
        threshold.add_metric([], self.settings.notifications.pending_alert_s)
        yield threshold

        free = GaugeMetricFamily(
            "emps_disk_free_bytes",
            "Free disk under the home, the landing zone or the database's data (the least)",
        )
        free.add_metric([], float(disk.free_bytes(self.settings)))
        yield free

        predictions = GaugeMetricFamily(
            "emps_predictions_last_hour", "Predictions in the last hour"
        )
        predictions.add_metric([], float(conn.execute(QUERIES["predictions"]).fetchone()[0]))
        yield predictions

        _, age = conn.execute(QUERIES["freshness"]).fetchone()
        freshness = GaugeMetricFamily(
            "emps_seconds_since_last_reading", "Age of the newest ingested reading"
        )
        freshness.add_metric([], float(age))
        yield freshness

    def _flow_durations(self) -> Iterator[Metric]:
        """Mean duration of each flow's runs finished in the last hour, from the Prefect API."""
        import os

        import httpx

        from emps import prefect_api

        api = self.prefect_api or os.environ.get("PREFECT_API_URL")
        if not api:
            return
        if self._prefect is None:
            self._prefect = prefect_api.client(api, self.prefect_auth, timeout=3)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        body = {
            "flow_runs": {
                "end_time": {"after_": since},
                "state": {"type": {"any_": ["COMPLETED"]}},
            },
            "limit": 200,
        }
        try:
            runs = self._prefect.post("/flow_runs/filter", json=body).raise_for_status().json()
            flows = {
                f["id"]: f["name"]
                for f in self._prefect.post("/flows/filter", json={"limit": 200})
                .raise_for_status()
                .json()
            }
        except (httpx.HTTPError, ValueError):
            return
        family = GaugeMetricFamily(
            "emps_flow_run_seconds",
            "Mean run time of completed flow runs, last hour",
            labels=["flow"],
        )
        totals: dict[str, list[float]] = {}
        for run in runs:
            totals.setdefault(flows.get(run["flow_id"], run["flow_id"]), []).append(
                float(run.get("total_run_time") or 0.0)
            )
        for flow, values in totals.items():
            family.add_metric([flow], sum(values) / len(values))
        yield family


def start(
    settings: Settings | None = None,
    prefect_api: str | None = None,
    prefect_auth: str | None = None,
):
    """Serve /metrics on 127.0.0.1:metrics_port from a background thread; returns the server
    (call .shutdown() to stop it). Flow run times come from the Prefect API at `prefect_api`
    (default PREFECT_API_URL) with the credential `prefect_auth` (PREFECT_API_AUTH_STRING)."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry

    settings = settings or get_settings()
    registry = CollectorRegistry()
    registry.register(PlatformCollector(settings, prefect_api, prefect_auth))
    server, _ = start_http_server(
        settings.services.metrics_port, addr="127.0.0.1", registry=registry
    )
    return server


def serve(settings: Settings | None = None) -> None:
    """Serve /metrics on 127.0.0.1 until killed."""
    start(settings)
    while True:
        time.sleep(3600)


class HttpMetrics:
    """Request count, latency and errors per route of an HTTP service (the API), kept in the
    serving process and exposed on its own /metrics."""

    def __init__(self, registry, prefix: str = "emps_api"):
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            f"{prefix}_requests",
            "HTTP requests answered, per route, method and status code",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_seconds",
            "Time to answer an HTTP request, per route and method",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.errors = Counter(
            f"{prefix}_errors",
            "HTTP requests that failed on the server's side (status 500 and above)",
            ["route", "method"],
            registry=registry,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
        if status >= 500:
            self.errors.labels(route, method).inc()
