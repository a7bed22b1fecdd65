"""The one settings object: every knob comes from `EMPS_*` environment variables or `.env`."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: src/emps/settings.py
ENV_FILE = ".env"  # read from the working directory, as pydantic-settings does


class Settings(BaseSettings):
    """Platform configuration. Defaults run everything locally under `var/`, with credentials
    generated into `<home>/secrets.json` (emps.credentials)."""

    model_config = SettingsConfigDict(
        env_prefix="EMPS_", env_file=ENV_FILE, env_file_encoding="utf-8", extra="ignore"
    )

    env: str = Field(
        "local", description="local | ci | prod: picks nothing by itself, shown in logs"
    )
    home: Path = Field(PROJECT_ROOT / "var", description="Root of all runtime state")
    secrets_path: Path | None = Field(
        None,
        description="The generated passwords and credentials (mode 0600); unset = "
        "<home>/secrets.json",
    )
    catalog_path: Path = Field(
        PROJECT_ROOT / "catalog" / "sensors.yaml",
        description="The fleet's catalog; unset: the one an imported fleet pack installed "
        "(<home>/catalog.yaml), else the shipped catalog/sensors.yaml",
    )
    fleet_pack: Path | None = Field(
        None,
        description="A fleet pack `emps up` imports and runs on instead of the simulated fleet",
    )

    # Database. When database_url is unset an embedded PostgreSQL runs under home/pg.
    database_url: SecretStr | None = Field(None, description="Owner URL used for migrations")
    writer_url: SecretStr | None = Field(None, description="URL of the flows' writer role")
    reader_url: SecretStr | None = Field(None, description="URL of the dashboard's read-only role")
    ingest_url: SecretStr | None = Field(None, description="URL of the ingest role (emps_ingest)")
    scoring_url: SecretStr | None = Field(
        None, description="URL of the scoring role (emps_scoring)"
    )
    alerting_url: SecretStr | None = Field(
        None, description="URL of the alerting role (emps_alerting)"
    )
    api_url: SecretStr | None = Field(None, description="URL of the HTTP API's role (emps_api)")
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_database: str = "emps"
    partitions_months_ahead: int = Field(3, ge=1, le=24)

    timezone: str = Field(
        "UTC",
        description="IANA time zone of reports, quiet hours and the deployments' cron schedules",
    )

    # Domain rules (DESIGN.md: severity bands). The bands in force live in ops.thresholds, which
    # admins edit on the dashboard; these seed it (each band until an admin first sets it).
    severity_medium: float = Field(0.30, gt=0, lt=1, description="Probability from which MEDIUM")
    severity_high: float = Field(0.60, gt=0, lt=1, description="Probability from which HIGH")
    severity_critical: float = Field(
        0.85, gt=0, le=1, description="Probability from which CRITICAL"
    )

    # Ingest flow.
    ingest_max_files_per_run: int = Field(
        10_000,
        ge=1,
        description="Files claimed per batch (loaded, then built and scored together; memory is "
        "bounded by EMPS_INGEST_GROUP_BYTES); the rest wait for the next batch",
    )
    ingest_group_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of files validated and loaded per transaction"
    )
    ingest_chunk_rows: int = Field(
        100_000, ge=100, description="Rows parsed and validated at a time (bounds memory)"
    )
    ingest_claim_timeout_s: int = Field(
        600, ge=10, description="A claim older than this, left by a killed run, is taken back"
    )
    ingest_future_tolerance_min: int = Field(
        5, ge=0, description="Readings further than this in the future are quarantined"
    )
    ingest_max_age_days: int = Field(
        730, ge=1, description="Readings older than this (retention) are quarantined"
    )
    ingest_naive_timestamps_utc: bool = Field(
        False, description="Take timestamps without a UTC offset as UTC instead of quarantining"
    )
    ingest_unknown_equipment: Literal["quarantine", "register"] = Field(
        "quarantine", description="Rows of equipment not in raw.equipment: quarantine or register"
    )
    ingest_keep_validations: int = Field(
        200, ge=1, description="Validation results kept under <home>/gx for `emps quality docs`"
    )
    ingest_loop_max_s: float = Field(
        600,
        ge=0,
        description="A run keeps ingesting files that arrive while it works (or lingers), for "
        "up to this long; 0 = one pass",
    )
    ingest_linger_s: float = Field(
        90,
        ge=0,
        description="Once incoming/ is empty, a run waits this long for more files before it "
        "ends, so the next minute's drops meet a warm process (no start, no imports); 0 = end",
    )
    ingest_watch: bool = Field(
        True,
        description="`emps up` runs the landing watcher: a dropped file starts an ingest run "
        "within seconds (the one-minute schedule stays as the safety net)",
    )
    ingest_watch_poll_s: float = Field(
        1.0, gt=0, le=60, description="The watcher looks at incoming/ at least this often"
    )
    ingest_watch_min_interval_s: float = Field(
        2.0, ge=0, description="At most one emps.file.arrived event this often (bursts coalesce)"
    )
    ingest_watch_rearm_s: float = Field(
        30.0,
        gt=0,
        description="Files still waiting this long after the watcher's last event, with no "
        "ingest run alive, are announced again",
    )
    # Ingest of whatever real devices send: limits, conflicts, settling, claims.
    ingest_settle_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="A file found by the scan (not announced by the kernel as closed or renamed "
        "into place) is claimed once its size and modification time have not changed this long",
    )
    ingest_max_attempts: int = Field(
        3,
        ge=1,
        description="Claims of one file by runs that died before finishing it; then it is "
        "quarantined unread so it cannot hold up others",
    )
    ingest_max_file_bytes: int = Field(
        1 << 30, ge=1024, description="Decompressed bytes of one file; beyond it, quarantined"
    )
    ingest_max_file_rows: int = Field(
        5_000_000, ge=1, description="Rows of one file; beyond it, quarantined"
    )
    ingest_max_file_seconds: float = Field(
        300, gt=0, description="Seconds reading one file may take; beyond it, quarantined"
    )
    ingest_min_free_mb: int = Field(
        1024,
        ge=0,
        description="Below this much free disk under the home, the landing zone or the "
        "database's data, ingest claims no new file: drops wait in incoming/, nothing lost, "
        "until space returns",
    )
    disk_warn_free_mb: int = Field(
        10 * 1024, ge=0, description="Free disk below which an operations alert warns"
    )
    disk_critical_free_mb: int = Field(
        4 * 1024,
        ge=0,
        description="Free disk below which the operations alert is critical (mailed again)",
    )
    ingest_big_file_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Files of more decompressed bytes load in their own transaction, after the "
        "small files of the run",
    )
    ingest_ignored_warn_s: float = Field(
        300,
        ge=0,
        description="Entries of incoming/ ingest never claims (dot files, *.part, links) are "
        "reported on the Data quality page once this old",
    )
    ingest_heartbeat_s: float = Field(
        15,
        gt=0,
        le=30,
        description="A running ingest run says so this often (event emps.ingest.alive); the "
        "deployment's safety-net trigger starts a run after a minute without one",
    )

    # Operations alerts (emps.alerting.operations).
    quarantine_alert_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Operations alert when more than this share of the rows of the last 15 "
        "minutes was quarantined",
    )
    quarantine_alert_min_rows: int = Field(
        20,
        ge=1,
        description="The quarantined-rows alert needs at least this many rows in those 15 minutes",
    )
    ops_alert_renotify_hours: float = Field(
        24, ge=0, description="An operations alert still open is mailed again this often; 0 = once"
    )

    # dbt features. The feature grid (slot, windows, baseline, horizon) is per equipment type in
    # the catalog.
    dbt_norm_min_slots: int = Field(
        50,
        ge=2,
        description="Slots of a type (per operating regime) before its sensor norms are learnt "
        "from data, for sensors without a healthy band in the catalog",
    )
    dbt_feature_lateral_max_slots: int = Field(
        50_000,
        ge=0,
        description="An incremental feature build with more new slots than this (a large "
        "import) runs the moving-window path over the affected equipment",
    )

    # Fleet simulator.
    sim_equipment: int = Field(200, ge=1)
    sim_seed: int = 42
    sim_history_days: int = Field(
        60, ge=1, description="Days of simulated history `emps up` backfills on an empty database"
    )
    sim_history_interval_s: int = Field(600, ge=60)
    sim_live_interval_s: int = Field(60, ge=1)
    sim_realism: Literal["real", "easy"] = Field(
        "real",
        description="How hard the simulated fleet is to read: real (every realism knob on) or "
        "easy (the earlier simulator's fleet, to compare a model on both)",
    )

    # Dashboard, users and reports.
    operator_url: SecretStr | None = Field(
        None, description="URL of the dashboard's narrow write role (emps_operator)"
    )
    admin_password: SecretStr | None = Field(
        None,
        description="Password of the first admin; unset = generated into <home>/first-admin.txt "
        "(0600) and changed at the first sign-in",
    )
    session_idle_s: int = Field(
        1800, ge=5, description="A dashboard session unused this long is signed out"
    )
    session_max_s: int = Field(
        12 * 3600, ge=60, description="A dashboard session ends this long after its sign-in"
    )
    cache_ttl_overview_s: int = Field(300, ge=0)
    cache_ttl_details_s: int = Field(120, ge=0)
    cache_ttl_trends_s: int = Field(900, ge=0)
    silent_minutes: int = Field(
        15, ge=1, description="Seeds ops.thresholds until an admin sets it on the dashboard"
    )
    query_timeout_ms: int = Field(10_000, ge=100)
    gx_docs_url: str | None = Field(None, description="Great Expectations Data Docs link")
    dbt_docs_url: str | None = Field(None, description="dbt docs link")

    # Alerts, maintenance tasks and notifications.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(8025, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_password_block: str | None = Field(
        None,
        description="Prefect Secret block holding the SMTP password (if no EMPS_SMTP_PASSWORD)",
    )
    smtp_tls: Literal["auto", "starttls", "tls", "none"] = Field(
        "auto",
        description="auto: STARTTLS whenever the server offers it (implicit TLS on port 465); "
        "starttls: refuse a server without it; tls: implicit TLS from the first byte (port 465); "
        "none: never encrypt",
    )
    smtp_allow_plain_login: bool = Field(
        False,
        description="Log in even on a connection without TLS (the password and every alert in "
        "clear text): only for a relay on a network you trust",
    )
    smtp_timeout_s: float = Field(
        10.0, gt=0, description="Seconds to connect, or to send one message, before giving up"
    )
    smtp_sink: bool = Field(
        True,
        description="`emps up` runs a local SMTP sink on 127.0.0.1:EMPS_SMTP_PORT keeping the mail "
        "in <home>/mailbox, when EMPS_SMTP_HOST is this machine; false for a real relay",
    )
    mail_from: str = "EMPS Alerts <emps-alerts@localhost>"
    sms_gateway_url: str | None = Field(
        None, description="POST target with {to} / {text} placeholders; unset = no SMS"
    )
    sms_gateway_token: SecretStr | None = None
    sms_allow_http: bool = Field(
        False,
        description="Accept an http:// EMPS_SMS_GATEWAY_URL (the token and texts in clear text): "
        "only for a gateway on a network you trust",
    )
    notify_ca_file: Path | None = Field(
        None,
        description="CA certificates (PEM) trusted besides the system's, for the SMTP server "
        "and the SMS gateway (a private CA)",
    )
    recipients_path: Path = Field(PROJECT_ROOT / "config" / "recipients.yaml")
    quiet_hours: str = Field("", description="HH:MM-HH:MM in `timezone`; never delays CRITICAL")
    escalation_delay_min: float = Field(
        15, gt=0, description="Minutes a CRITICAL alert may stay unacknowledged before escalating"
    )
    inspection_within_days: int = Field(3, ge=1)
    auto_resolve_healthy_hours: int = Field(24, ge=0, description="0 disables auto-resolve")
    alert_retention_days: int = Field(
        90,
        ge=2,
        description="Days a resolved alert stays in the database; then it is archived with its "
        "notifications under <home>/records/ (a summary stays for the Analytics counts)",
    )
    audit_retention_days: int = Field(
        365, ge=2, description="Days the audit log keeps an entry before archiving it"
    )
    notification_retention_days: int = Field(
        90,
        ge=2,
        description="Days a delivered (or given up) notification of no alert, an operations "
        "alert's or a report's, stays before archiving; resolved operations alerts likewise",
    )
    quarantine_retention_days: int = Field(
        90,
        ge=2,
        description="Days a quarantined row stays for review before archiving (an unresolved "
        "conflict or a row waiting for its retry stays until resolved)",
    )
    ingest_ledger_retention_days: int = Field(
        30,
        ge=2,
        description="Days each drop file's outcome stays in raw.ingest_files (files with "
        "quarantined rows still kept stay with them); expired sign-in tokens go likewise",
    )
    prediction_detail_days: int = Field(
        35,
        ge=2,
        description="Days predictions stay one per scoring; older months are rolled up to one "
        "row per equipment and hour (ops.predictions_hourly), kept EMPS_SENSOR_RETENTION_DAYS",
    )
    sensor_retention_days: int = Field(730, ge=30)
    archive_retention_days: int = Field(
        30,
        ge=1,
        description="Days drop files stay in landing/archive/ as received, after their readings "
        "loaded (readings and the ledger stay)",
    )
    reports_retention_days: int = Field(
        90, ge=1, description="Days the daily report files stay in <home>/reports/daily/"
    )
    mailbox_retention_days: int = Field(
        30, ge=1, description="Days the local SMTP sink keeps its mail in <home>/mailbox/"
    )
    prefect_retention_days: float = Field(
        14,
        ge=1,
        description="Flow runs ended longer ago than this are deleted by the Prefect server, "
        "with their task runs, logs and artifacts (each file's outcome stays in "
        "raw.ingest_files)",
    )
    partition_retention_mode: str = Field("detach", pattern="^(detach|drop)$")
    notify_max_attempts: int = Field(
        8, ge=1, description="Tries of a notification the server refuses for a reason of its own"
    )
    notify_backoff_s: float = Field(
        30.0, ge=0, description="Wait before the second try of such a notification; doubles"
    )
    notify_backoff_max_s: float = Field(
        900.0, ge=0, description="Longest wait between two tries of one notification"
    )
    notify_outage_retry_s: float = Field(
        30.0,
        ge=0,
        description="While the SMTP server or SMS gateway cannot take any message (down, login "
        "or TLS refused), notifications wait this long between tries, using up no attempt",
    )
    notify_lease_s: float = Field(
        120.0,
        gt=0,
        description="A sender's hold on the notifications it claimed, renewed while it sends; at "
        "least twice EMPS_SMTP_TIMEOUT_S",
    )
    notify_pending_alert_s: float = Field(
        600.0,
        gt=0,
        description="Operations alert when a due notification has waited longer than this "
        "(metric emps_notification_oldest_pending_seconds)",
    )
    dashboard_base_url: str = "http://127.0.0.1:8501"

    # ML model, registry and scoring.
    mlflow_tracking_uri: str | None = Field(
        None, description="Tracking + registry URI; unset = sqlite:///<home>/mlflow/mlflow.db"
    )
    mlflow_artifact_root: Path | None = Field(
        None, description="Artifact store of new experiments; unset = <home>/mlflow/artifacts"
    )
    mlflow_experiment: str = "equipment-failure"
    model_name: str = "equipment-failure"
    ml_features_relation: str = Field(
        "analytics.fct_equipment_features", description="dbt feature table the scorer reads"
    )
    ml_examples_relation: str = Field(
        "analytics.mart_training_examples", description="dbt labelled examples training reads"
    )
    ml_sample_minutes: int = Field(
        60, ge=1, description="Training examples read at one row per equipment per N minutes"
    )
    ml_max_training_rows: int = Field(
        100_000,
        ge=1_000,
        description="At most about this many training examples are read: a longer history or a "
        "bigger fleet is read at a wider step than EMPS_ML_SAMPLE_MINUTES (every equipment, "
        "evenly in time, so failures keep their share), which keeps training time bounded; "
        "raise it on a bigger machine",
    )
    ml_n_estimators: int = Field(200, ge=1)
    ml_min_samples_leaf: int = Field(10, ge=1)
    ml_max_samples: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of the training rows each classifier tree draws (1 = a full bootstrap): "
        "0.3 fitted 2.5 times faster with the same held-out quality at 200 equipment x 120 days",
    )
    ml_n_jobs: int = Field(2, ge=1)
    ml_seed: int = 7
    ml_test_equipment_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Equipment held out of training entirely: the first half is the gate slice "
        "(the promotion gate compares models there), the second the report slice (the figures "
        "versions report; no gate sees it)",
    )
    ml_test_time_fraction: float = Field(
        0.3, gt=0, lt=1, description="Latest share of the time span used only for evaluation"
    )
    ml_calibration_folds: int = Field(
        3,
        ge=2,
        le=10,
        description="Groups of training equipment whose out-of-fold forest votes calibrate the "
        "probabilities",
    )
    ml_cv_folds: int = Field(
        5,
        ge=2,
        le=20,
        description="Run-to-failure histories: the grouped k-fold over all units whose held-out "
        "predictions give a training run's figures",
    )
    ml_rul_cap: float | None = Field(
        None,
        gt=0,
        description="Remaining life is estimated up to this many of a type's life units (days "
        "for wall-time clocks, the counter's unit such as cycles otherwise) and shown as 'more "
        "than' beyond, where history gives no support; unset: 125 for counter clocks, three "
        "failure horizons for wall-time clocks",
    )
    ml_gate_metric: Literal["pr_auc", "roc_auc", "brier"] = Field(
        "pr_auc", description="What the promotion gate compares on the gate slice"
    )
    ml_gate_min_improvement: float = Field(
        0.0,
        ge=0,
        description="The lower end of the 95 % interval of the challenger's improvement over "
        "the champion (equipment resampled, paired) must exceed this",
    )
    ml_gate_min_failures: int = Field(
        10,
        ge=1,
        description="Failures the gate slice must hold before the gate compares two models; "
        "with fewer it keeps the champion",
    )
    ml_explain_top: int = Field(5, ge=1, le=50, description="Features kept per explanation")
    ml_backtest_weeks: int = Field(
        8,
        ge=1,
        le=104,
        description="Weeks of history replayed by the backtest each trained model carries in "
        "MLflow (next to the champion's) and by the Admin page's preview of new severity bands",
    )
    ml_alias_max_age_s: float = Field(
        10.0,
        ge=0,
        description="One-equipment predictions (emps predict, what-if) reuse the champion alias "
        "read this many seconds ago; scoring runs always read it afresh",
    )

    # The HTTP API: device ingest with per-device keys.
    api_port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API on 127.0.0.1")
    api_max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest ingest request body accepted (larger: 413)"
    )
    api_max_readings: int = Field(
        10_000, ge=1, description="Most readings one ingest request may carry (more: 413)"
    )
    api_rate_per_key: float = Field(
        100.0, gt=0, description="Ingest requests per second one device key may send (then 429)"
    )
    api_rate_burst: int = Field(
        200, ge=1, description="Ingest requests one device key may send at once above its rate"
    )
    api_group_commit_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Milliseconds an ingest request may wait for others to share its fsync; "
        "0: the fsync starts at once, and requests arriving while it runs share the next",
    )
    api_drop_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How long the API appends to one drop file before it is renamed into "
        "incoming/<device>/ for ingest to pick up",
    )
    api_queue_max: int = Field(
        100_000,
        ge=1,
        description="Readings waiting for their fsync beyond which ingest requests get 429",
    )
    api_key_cache_s: float = Field(
        5.0,
        ge=0,
        description="Seconds the API trusts a checked device key before asking the database "
        "again (a revoked key stops working within this time)",
    )
    api_predict_max: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Equipment one predict request scores: the most ids it may name, and the "
        "page size of `all` (the rest: the next page)",
    )
    api_base_url: str | None = Field(
        None,
        description="Where `emps predict` finds the HTTP API; unset: http://127.0.0.1:<api_port>",
    )
    api_token: SecretStr | None = Field(
        None,
        description="A user token (`emps user token`) `emps predict` sends to the API; unset: "
        "the token file",
    )
    api_token_file: Path | None = Field(
        None,
        description="The user token `emps predict` sends to the API (`emps user token --save` "
        "writes it, mode 0600); unset: <home>/api-token",
    )

    # Platform services started by `emps up` (all on loopback).
    prefect_port: int = 4200
    mlflow_port: int = 5000
    streamlit_port: int = 8501
    metrics_port: int = 9108
    prefect_database: str = Field("postgres", description="postgres (same server) or sqlite")
    worker_poll_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often the Prefect worker asks for runs due (each triggered flow waits "
        "up to this long to start)",
    )
    restart_limit: int = Field(
        5, ge=0, description="Restarts of a crashed service before giving up"
    )
    restart_reset_s: float = Field(
        600,
        gt=0,
        description="A service running this long since its last start has its whole restart "
        "budget again",
    )
    log_max_bytes: int = Field(
        50 * 1024 * 1024,
        ge=1024,
        description="A service log (<home>/log/*.log) past this size is rotated: compressed "
        "to <name>.log.1.gz and emptied in place",
    )
    log_keep: int = Field(5, ge=1, description="Rotated logs kept per service log")

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

    @model_validator(mode="after")
    def _installed_catalog(self) -> Settings:
        """Without EMPS_CATALOG_PATH, the catalog an imported fleet pack installed is the
        platform's: every process of an install then reads the same one."""
        installed = self.home / "catalog.yaml"
        if "catalog_path" not in self.model_fields_set and installed.is_file():
            self.catalog_path = installed
        return self

    @model_validator(mode="after")
    def _bands_rise(self) -> Settings:
        if not self.severity_medium < self.severity_high < self.severity_critical:
            raise ValueError(
                "severity bands must rise: EMPS_SEVERITY_MEDIUM "
                f"({self.severity_medium}) < EMPS_SEVERITY_HIGH ({self.severity_high}) < "
                f"EMPS_SEVERITY_CRITICAL ({self.severity_critical})"
            )
        return self

    @model_validator(mode="after")
    def _notifications_safe(self) -> Settings:
        if self.notify_lease_s < 2 * self.smtp_timeout_s:
            raise ValueError(
                f"EMPS_NOTIFY_LEASE_S ({self.notify_lease_s:g}) must be at least twice "
                f"EMPS_SMTP_TIMEOUT_S ({self.smtp_timeout_s:g}): a sender must finish a message "
                "well within its hold on it, or another sender sends it too"
            )
        if (
            self.sms_gateway_url
            and not self.sms_gateway_url.lower().startswith("https://")
            and not self.sms_allow_http
        ):
            raise ValueError(
                "EMPS_SMS_GATEWAY_URL must start with https:// (the bearer token and the texts "
                "would cross the network in clear text); set EMPS_SMS_ALLOW_HTTP=true only for a "
                "gateway on a network you trust"
            )
        return self

    @field_validator("api_base_url")
    @classmethod
    def _token_never_in_clear_text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value
        raise ValueError(
            f"EMPS_API_BASE_URL {value!r}: use https:// (the user token would cross the "
            "network in clear text), or http:// only on this machine (127.0.0.1, localhost)"
        )

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/London"
            ) from None
        return value

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def reports_dir(self) -> Path:
        """The one folder emails may attach files from."""
        return self.home / "reports"

    @property
    def records_dir(self) -> Path:
        """Compressed archives of rows taken out of the database (ops.archive_files)."""
        return self.home / "records"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def api_endpoint(self) -> str:
        """The HTTP API's base URL, without a trailing slash."""
        return (self.api_base_url or f"http://127.0.0.1:{self.api_port}").rstrip("/")

    @property
    def api_token_path(self) -> Path:
        return self.api_token_file or self.home / "api-token"

    @property
    def embedded(self) -> bool:
        return self.database_url is None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import)."""
    return Settings()


# EMPS_* variables the platform sets for its own children (prefect.yaml, dbt's profiles.yml),
# not settings.
NOT_SETTINGS = ("EMPS_PROJECT_ROOT", "EMPS_PUBLIC_HOST", "EMPS_DBT_")


def unknown_variables(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[str]:
    """A warning per EMPS_* variable in the environment or .env that no setting reads: settings
    ignore unknown names, so a typo or a setting that was removed would otherwise change nothing
    without a word."""
    known = {f"EMPS_{name.upper()}" for name in Settings.model_fields}
    env_file = env_file or Path(ENV_FILE)
    sources = {"the environment": environ if environ is not None else os.environ}
    if env_file.is_file():
        sources[str(env_file)] = {k: v or "" for k, v in dotenv_values(env_file).items()}
    warnings = []
    for where, names in sources.items():
        for name in sorted(names):
            upper = name.upper()
            if not upper.startswith("EMPS_") or upper in known or upper.startswith(NOT_SETTINGS):
                continue
            close = difflib.get_close_matches(upper, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.append(f"{name} (in {where}) is not an EMPS setting and is ignored{hint}")
    return warnings
