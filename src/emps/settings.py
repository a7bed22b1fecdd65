"""The one settings object: every knob comes from `EMPS_*` environment variables or `.env`.

`Settings` holds the install (home, catalog, time zone) and one model per area (`settings.ml`,
`settings.ingest`, ...). Each field keeps the variable it always had: its area's prefix and its
name in capitals (`EMPS_ML_` + `n_estimators`), or the name its `validation_alias` gives
(`EMPS_DATABASE_URL` for `database.url`). `variables()` lists them all."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: src/emps/settings.py
ENV_FILE = ".env"  # read from the working directory, as pydantic-settings does


class _Area(BaseModel):
    """The settings of one area. A field's variable is `env_prefix` and its name in capitals,
    unless its `validation_alias` names another: the flat names users' environments and .env
    files have always carried."""

    # validate_default as BaseSettings does: a float field's default 600 reads as 600.0.
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, validate_default=True
    )
    env_prefix: ClassVar[str] = "EMPS_"


class DatabaseSettings(_Area):
    """Where the data lives: the roles' URLs. With `EMPS_DATABASE_URL` unset an embedded
    PostgreSQL runs under <home>/pg."""

    url: SecretStr | None = Field(
        None, description="Owner URL used for migrations", validation_alias="EMPS_DATABASE_URL"
    )
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
    operator_url: SecretStr | None = Field(
        None, description="URL of the dashboard's narrow write role (emps_operator)"
    )
    pg_host: str = "127.0.0.1"
    pg_port: int = 55432
    pg_database: str = "emps"
    partitions_months_ahead: int = Field(3, ge=1, le=24)
    query_timeout_ms: int = Field(10_000, ge=100)

    @property
    def embedded(self) -> bool:
        """No EMPS_DATABASE_URL: the platform runs its own PostgreSQL under <home>/pg."""
        return self.url is None


class ThresholdSettings(_Area):
    """Domain rules (DESIGN.md: severity bands). The values in force live in ops.thresholds,
    which admins edit on the dashboard; these seed it (each until an admin first sets it)."""

    severity_medium: float = Field(0.30, gt=0, lt=1, description="Probability from which MEDIUM")
    severity_high: float = Field(0.60, gt=0, lt=1, description="Probability from which HIGH")
    severity_critical: float = Field(
        0.85, gt=0, le=1, description="Probability from which CRITICAL"
    )
    silent_minutes: int = Field(
        15, ge=1, description="Seeds ops.thresholds until an admin sets it on the dashboard"
    )

    @model_validator(mode="after")
    def _bands_rise(self) -> ThresholdSettings:
        if not self.severity_medium < self.severity_high < self.severity_critical:
            raise ValueError(
                "severity bands must rise: EMPS_SEVERITY_MEDIUM "
                f"({self.severity_medium}) < EMPS_SEVERITY_HIGH ({self.severity_high}) < "
                f"EMPS_SEVERITY_CRITICAL ({self.severity_critical})"
            )
        return self


class IngestSettings(_Area):
    """The ingest flow and the landing watcher: batches, limits, conflicts, settling, claims."""

    env_prefix: ClassVar[str] = "EMPS_INGEST_"

    max_files_per_run: int = Field(
        10_000,
        ge=1,
        description="Files claimed per batch (loaded, then built and scored together; memory is "
        "bounded by EMPS_INGEST_GROUP_BYTES); the rest wait for the next batch",
    )
    group_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Bytes of files validated and loaded per transaction"
    )
    chunk_rows: int = Field(
        100_000, ge=100, description="Rows parsed and validated at a time (bounds memory)"
    )
    claim_timeout_s: int = Field(
        600, ge=10, description="A claim older than this, left by a killed run, is taken back"
    )
    future_tolerance_min: int = Field(
        5, ge=0, description="Readings further than this in the future are quarantined"
    )
    max_age_days: int = Field(
        730, ge=1, description="Readings older than this (retention) are quarantined"
    )
    naive_timestamps_utc: bool = Field(
        False, description="Take timestamps without a UTC offset as UTC instead of quarantining"
    )
    unknown_equipment: Literal["quarantine", "register"] = Field(
        "quarantine", description="Rows of equipment not in raw.equipment: quarantine or register"
    )
    keep_validations: int = Field(
        200, ge=1, description="Validation results kept under <home>/gx for `emps quality docs`"
    )
    loop_max_s: float = Field(
        600,
        ge=0,
        description="A run keeps ingesting files that arrive while it works (or lingers), for "
        "up to this long; 0 = one pass",
    )
    linger_s: float = Field(
        90,
        ge=0,
        description="Once incoming/ is empty, a run waits this long for more files before it "
        "ends, so the next minute's drops meet a warm process (no start, no imports); 0 = end",
    )
    watch: bool = Field(
        True,
        description="`emps up` runs the landing watcher: a dropped file starts an ingest run "
        "within seconds (the one-minute schedule stays as the safety net)",
    )
    watch_poll_s: float = Field(
        1.0, gt=0, le=60, description="The watcher looks at incoming/ at least this often"
    )
    watch_min_interval_s: float = Field(
        2.0, ge=0, description="At most one emps.file.arrived event this often (bursts coalesce)"
    )
    watch_rearm_s: float = Field(
        30.0,
        gt=0,
        description="Files still waiting this long after the watcher's last event, with no "
        "ingest run alive, are announced again",
    )
    settle_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="A file found by the scan (not announced by the kernel as closed or renamed "
        "into place) is claimed once its size and modification time have not changed this long",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="Claims of one file by runs that died before finishing it; then it is "
        "quarantined unread so it cannot hold up others",
    )
    max_file_bytes: int = Field(
        1 << 30, ge=1024, description="Decompressed bytes of one file; beyond it, quarantined"
    )
    max_file_rows: int = Field(
        5_000_000, ge=1, description="Rows of one file; beyond it, quarantined"
    )
    max_file_seconds: float = Field(
        300, gt=0, description="Seconds reading one file may take; beyond it, quarantined"
    )
    min_free_mb: int = Field(
        1024,
        ge=0,
        description="Below this much free disk under the home, the landing zone or the "
        "database's data, ingest claims no new file: drops wait in incoming/, nothing lost, "
        "until space returns",
    )
    big_file_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Files of more decompressed bytes load in their own transaction, after the "
        "small files of the run",
    )
    ignored_warn_s: float = Field(
        300,
        ge=0,
        description="Entries of incoming/ ingest never claims (dot files, *.part, links) are "
        "reported on the Data quality page once this old",
    )
    heartbeat_s: float = Field(
        15,
        gt=0,
        le=30,
        description="A running ingest run says so this often (event emps.ingest.alive); the "
        "deployment's safety-net trigger starts a run after a minute without one",
    )


class FeatureSettings(_Area):
    """dbt features. The feature grid (slot, windows, baseline, horizon) is per equipment type
    in the catalog."""

    env_prefix: ClassVar[str] = "EMPS_DBT_"

    norm_min_slots: int = Field(
        50,
        ge=2,
        description="Slots of a type (per operating regime) before its sensor norms are learnt "
        "from data, for sensors without a healthy band in the catalog",
    )
    lateral_max_slots: int = Field(
        50_000,
        ge=0,
        description="An incremental feature build with more new slots than this (a large "
        "import) runs the moving-window path over the affected equipment",
        validation_alias="EMPS_DBT_FEATURE_LATERAL_MAX_SLOTS",
    )


class MLSettings(_Area):
    """The model: MLflow tracking and registry, training, the promotion gate and scoring."""

    env_prefix: ClassVar[str] = "EMPS_ML_"

    mlflow_tracking_uri: str | None = Field(
        None,
        description="Tracking + registry URI; unset = sqlite:///<home>/mlflow/mlflow.db",
        validation_alias="EMPS_MLFLOW_TRACKING_URI",
    )
    mlflow_artifact_root: Path | None = Field(
        None,
        description="Artifact store of new experiments; unset = <home>/mlflow/artifacts",
        validation_alias="EMPS_MLFLOW_ARTIFACT_ROOT",
    )
    mlflow_experiment: str = Field("equipment-failure", validation_alias="EMPS_MLFLOW_EXPERIMENT")
    model_name: str = Field("equipment-failure", validation_alias="EMPS_MODEL_NAME")
    features_relation: str = Field(
        "analytics.fct_equipment_features", description="dbt feature table the scorer reads"
    )
    examples_relation: str = Field(
        "analytics.mart_training_examples", description="dbt labelled examples training reads"
    )
    sample_minutes: int = Field(
        60, ge=1, description="Training examples read at one row per equipment per N minutes"
    )
    max_training_rows: int = Field(
        100_000,
        ge=1_000,
        description="At most about this many training examples are read: a longer history or a "
        "bigger fleet is read at a wider step than EMPS_ML_SAMPLE_MINUTES (every equipment, "
        "evenly in time, so failures keep their share), which keeps training time bounded; "
        "raise it on a bigger machine",
    )
    n_estimators: int = Field(200, ge=1)
    min_samples_leaf: int = Field(10, ge=1)
    max_samples: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Share of the training rows each classifier tree draws (1 = a full bootstrap): "
        "0.3 fitted 2.5 times faster with the same held-out quality at 200 equipment x 120 days",
    )
    n_jobs: int = Field(2, ge=1)
    seed: int = 7
    test_equipment_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Equipment held out of training entirely: the first half is the gate slice "
        "(the promotion gate compares models there), the second the report slice (the figures "
        "versions report; no gate sees it)",
    )
    test_time_fraction: float = Field(
        0.3, gt=0, lt=1, description="Latest share of the time span used only for evaluation"
    )
    calibration_folds: int = Field(
        3,
        ge=2,
        le=10,
        description="Groups of training equipment whose out-of-fold forest votes calibrate the "
        "probabilities",
    )
    cv_folds: int = Field(
        5,
        ge=2,
        le=20,
        description="Run-to-failure histories: the grouped k-fold over all units whose held-out "
        "predictions give a training run's figures",
    )
    rul_cap: float | None = Field(
        None,
        gt=0,
        description="Remaining life is estimated up to this many of a type's life units (days "
        "for wall-time clocks, the counter's unit such as cycles otherwise) and shown as 'more "
        "than' beyond, where history gives no support; unset: 125 for counter clocks, three "
        "failure horizons for wall-time clocks",
    )
    gate_metric: Literal["pr_auc", "roc_auc", "brier"] = Field(
        "pr_auc", description="What the promotion gate compares on the gate slice"
    )
    gate_min_improvement: float = Field(
        0.0,
        ge=0,
        description="The lower end of the 95 % interval of the challenger's improvement over "
        "the champion (equipment resampled, paired) must exceed this",
    )
    gate_min_failures: int = Field(
        10,
        ge=1,
        description="Failures the gate slice must hold before the gate compares two models; "
        "with fewer it keeps the champion",
    )
    explain_top: int = Field(5, ge=1, le=50, description="Features kept per explanation")
    backtest_weeks: int = Field(
        8,
        ge=1,
        le=104,
        description="Weeks of history replayed by the backtest each trained model carries in "
        "MLflow (next to the champion's) and by the Admin page's preview of new severity bands",
    )
    alias_max_age_s: float = Field(
        10.0,
        ge=0,
        description="One-equipment predictions (emps predict, what-if) reuse the champion alias "
        "read this many seconds ago; scoring runs always read it afresh",
    )


class AlertingSettings(_Area):
    """Alerts and the maintenance tasks they open."""

    escalation_delay_min: float = Field(
        15, gt=0, description="Minutes a CRITICAL alert may stay unacknowledged before escalating"
    )
    inspection_within_days: int = Field(3, ge=1)
    auto_resolve_healthy_hours: int = Field(24, ge=0, description="0 disables auto-resolve")


class NotificationSettings(_Area):
    """Notifications: the SMTP server, the SMS gateway, recipients and the outbox's retries."""

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
    ca_file: Path | None = Field(
        None,
        description="CA certificates (PEM) trusted besides the system's, for the SMTP server "
        "and the SMS gateway (a private CA)",
        validation_alias="EMPS_NOTIFY_CA_FILE",
    )
    recipients_path: Path = Field(PROJECT_ROOT / "config" / "recipients.yaml")
    quiet_hours: str = Field("", description="HH:MM-HH:MM in `timezone`; never delays CRITICAL")
    max_attempts: int = Field(
        8,
        ge=1,
        description="Tries of a notification the server refuses for a reason of its own",
        validation_alias="EMPS_NOTIFY_MAX_ATTEMPTS",
    )
    backoff_s: float = Field(
        30.0,
        ge=0,
        description="Wait before the second try of such a notification; doubles",
        validation_alias="EMPS_NOTIFY_BACKOFF_S",
    )
    backoff_max_s: float = Field(
        900.0,
        ge=0,
        description="Longest wait between two tries of one notification",
        validation_alias="EMPS_NOTIFY_BACKOFF_MAX_S",
    )
    outage_retry_s: float = Field(
        30.0,
        ge=0,
        description="While the SMTP server or SMS gateway cannot take any message (down, login "
        "or TLS refused), notifications wait this long between tries, using up no attempt",
        validation_alias="EMPS_NOTIFY_OUTAGE_RETRY_S",
    )
    lease_s: float = Field(
        120.0,
        gt=0,
        description="A sender's hold on the notifications it claimed, renewed while it sends; at "
        "least twice EMPS_SMTP_TIMEOUT_S",
        validation_alias="EMPS_NOTIFY_LEASE_S",
    )
    pending_alert_s: float = Field(
        600.0,
        gt=0,
        description="Operations alert when a due notification has waited longer than this "
        "(metric emps_notification_oldest_pending_seconds)",
        validation_alias="EMPS_NOTIFY_PENDING_ALERT_S",
    )

    @model_validator(mode="after")
    def _notifications_safe(self) -> NotificationSettings:
        if self.lease_s < 2 * self.smtp_timeout_s:
            raise ValueError(
                f"EMPS_NOTIFY_LEASE_S ({self.lease_s:g}) must be at least twice "
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


class OperationsSettings(_Area):
    """Operations alerts (emps.alerting.operations): the platform's own health."""

    disk_warn_free_mb: int = Field(
        10 * 1024, ge=0, description="Free disk below which an operations alert warns"
    )
    disk_critical_free_mb: int = Field(
        4 * 1024,
        ge=0,
        description="Free disk below which the operations alert is critical (mailed again)",
    )
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
    renotify_hours: float = Field(
        24,
        ge=0,
        description="An operations alert still open is mailed again this often; 0 = once",
        validation_alias="EMPS_OPS_ALERT_RENOTIFY_HOURS",
    )


class RetentionSettings(_Area):
    """How long each kind of record stays before it is archived under <home>/records/ or deleted."""

    alert_days: int = Field(
        90,
        ge=2,
        description="Days a resolved alert stays in the database; then it is archived with its "
        "notifications under <home>/records/ (a summary stays for the Analytics counts)",
        validation_alias="EMPS_ALERT_RETENTION_DAYS",
    )
    audit_days: int = Field(
        365,
        ge=2,
        description="Days the audit log keeps an entry before archiving it",
        validation_alias="EMPS_AUDIT_RETENTION_DAYS",
    )
    notification_days: int = Field(
        90,
        ge=2,
        description="Days a delivered (or given up) notification of no alert, an operations "
        "alert's or a report's, stays before archiving; resolved operations alerts likewise",
        validation_alias="EMPS_NOTIFICATION_RETENTION_DAYS",
    )
    quarantine_days: int = Field(
        90,
        ge=2,
        description="Days a quarantined row stays for review before archiving (an unresolved "
        "conflict or a row waiting for its retry stays until resolved)",
        validation_alias="EMPS_QUARANTINE_RETENTION_DAYS",
    )
    ingest_ledger_days: int = Field(
        30,
        ge=2,
        description="Days each drop file's outcome stays in raw.ingest_files (files with "
        "quarantined rows still kept stay with them); expired sign-in tokens go likewise",
        validation_alias="EMPS_INGEST_LEDGER_RETENTION_DAYS",
    )
    prediction_detail_days: int = Field(
        35,
        ge=2,
        description="Days predictions stay one per scoring; older months are rolled up to one "
        "row per equipment and hour (ops.predictions_hourly), kept EMPS_SENSOR_RETENTION_DAYS",
    )
    sensor_days: int = Field(730, ge=30, validation_alias="EMPS_SENSOR_RETENTION_DAYS")
    archive_days: int = Field(
        30,
        ge=1,
        description="Days drop files stay in landing/archive/ as received, after their readings "
        "loaded (readings and the ledger stay)",
        validation_alias="EMPS_ARCHIVE_RETENTION_DAYS",
    )
    reports_days: int = Field(
        90,
        ge=1,
        description="Days the daily report files stay in <home>/reports/daily/",
        validation_alias="EMPS_REPORTS_RETENTION_DAYS",
    )
    mailbox_days: int = Field(
        30,
        ge=1,
        description="Days the local SMTP sink keeps its mail in <home>/mailbox/",
        validation_alias="EMPS_MAILBOX_RETENTION_DAYS",
    )
    prefect_days: float = Field(
        14,
        ge=1,
        description="Flow runs ended longer ago than this are deleted by the Prefect server, "
        "with their task runs, logs and artifacts (each file's outcome stays in "
        "raw.ingest_files)",
        validation_alias="EMPS_PREFECT_RETENTION_DAYS",
    )
    partition_mode: str = Field(
        "detach", pattern="^(detach|drop)$", validation_alias="EMPS_PARTITION_RETENTION_MODE"
    )


class DashboardSettings(_Area):
    """The dashboard: its address, caches and documentation links."""

    base_url: str = Field("http://127.0.0.1:8501", validation_alias="EMPS_DASHBOARD_BASE_URL")
    cache_ttl_overview_s: int = Field(300, ge=0)
    cache_ttl_details_s: int = Field(120, ge=0)
    cache_ttl_trends_s: int = Field(900, ge=0)
    gx_docs_url: str | None = Field(None, description="Great Expectations Data Docs link")
    dbt_docs_url: str | None = Field(None, description="dbt docs link")


class AuthSettings(_Area):
    """Users: the first admin and dashboard sessions."""

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


class APISettings(_Area):
    """The HTTP API: device ingest with per-device keys, and how `emps predict` reaches it."""

    env_prefix: ClassVar[str] = "EMPS_API_"

    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP API on 127.0.0.1")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest ingest request body accepted (larger: 413)"
    )
    max_readings: int = Field(
        10_000, ge=1, description="Most readings one ingest request may carry (more: 413)"
    )
    rate_per_key: float = Field(
        100.0, gt=0, description="Ingest requests per second one device key may send (then 429)"
    )
    rate_burst: int = Field(
        200, ge=1, description="Ingest requests one device key may send at once above its rate"
    )
    group_commit_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Milliseconds an ingest request may wait for others to share its fsync; "
        "0: the fsync starts at once, and requests arriving while it runs share the next",
    )
    drop_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How long the API appends to one drop file before it is renamed into "
        "incoming/<device>/ for ingest to pick up",
    )
    queue_max: int = Field(
        100_000,
        ge=1,
        description="Readings waiting for their fsync beyond which ingest requests get 429",
    )
    key_cache_s: float = Field(
        5.0,
        ge=0,
        description="Seconds the API trusts a checked device key before asking the database "
        "again (a revoked key stops working within this time)",
    )
    predict_max: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Equipment one predict request scores: the most ids it may name, and the "
        "page size of `all` (the rest: the next page)",
    )
    base_url: str | None = Field(
        None,
        description="Where `emps predict` finds the HTTP API; unset: http://127.0.0.1:<api_port>",
    )
    token: SecretStr | None = Field(
        None,
        description="A user token (`emps user token`) `emps predict` sends to the API; unset: "
        "the token file",
    )
    token_file: Path | None = Field(
        None,
        description="The user token `emps predict` sends to the API (`emps user token --save` "
        "writes it, mode 0600); unset: <home>/api-token",
    )

    @field_validator("base_url")
    @classmethod
    def _token_never_in_clear_text(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if parts.scheme == "https" or (parts.scheme == "http" and loopback):
            return value
        raise ValueError(
            f"EMPS_API_BASE_URL {value!r}: use https:// (the user token would cross the "
            "network in clear text), or http:// only on this machine (127.0.0.1, localhost)"
        )

    @property
    def endpoint(self) -> str:
        """The HTTP API's base URL, without a trailing slash."""
        return (self.base_url or f"http://127.0.0.1:{self.port}").rstrip("/")


class SimulatorSettings(_Area):
    """The fleet simulator."""

    env_prefix: ClassVar[str] = "EMPS_SIM_"

    equipment: int = Field(200, ge=1)
    seed: int = 42
    history_days: int = Field(
        60, ge=1, description="Days of simulated history `emps up` backfills on an empty database"
    )
    history_interval_s: int = Field(600, ge=60)
    live_interval_s: int = Field(60, ge=1)
    realism: Literal["real", "easy"] = Field(
        "real",
        description="How hard the simulated fleet is to read: real (every realism knob on) or "
        "easy (the earlier simulator's fleet, to compare a model on both)",
    )


class ServiceSettings(_Area):
    """Platform services started by `emps up` (all on loopback), and how they are kept running."""

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


class Settings(BaseSettings):
    """Platform configuration. Defaults run everything locally under `var/`, with credentials
    generated into `<home>/secrets.json` (emps.credentials)."""

    # extra="forbid" checks keyword arguments only (a flat name such as ml_seed=1 fails): the
    # sources below read the known variables alone, by their EMPS_* names. An error names the
    # variable but never echoes the input: an area's cross-field check would print passwords.
    model_config = SettingsConfigDict(
        env_file=ENV_FILE, env_file_encoding="utf-8", extra="forbid", hide_input_in_errors=True
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
    timezone: str = Field(
        "UTC",
        description="IANA time zone of reports, quiet hours and the deployments' cron schedules",
    )

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    thresholds: ThresholdSettings = Field(default_factory=ThresholdSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    ml: MLSettings = Field(default_factory=MLSettings)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    operations: OperationsSettings = Field(default_factory=OperationsSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    api: APISettings = Field(default_factory=APISettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    services: ServiceSettings = Field(default_factory=ServiceSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then .env (the file `_env_file` names, if
        given), each read by its flat EMPS_* names and placed into the areas."""
        env_file = getattr(dotenv_settings, "env_file", ENV_FILE)
        encoding = getattr(dotenv_settings, "env_file_encoding", "utf-8")
        flat = _flat_variables()
        return (
            init_settings,
            _Nested(settings_cls, EnvSettingsSource(flat)),
            _Nested(settings_cls, DotEnvSettingsSource(flat, env_file, encoding)),
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _installed_catalog(self) -> Settings:
        """Without EMPS_CATALOG_PATH, the catalog an imported fleet pack installed is the
        platform's: every process of an install then reads the same one."""
        installed = self.home / "catalog.yaml"
        if "catalog_path" not in self.model_fields_set and installed.is_file():
            self.catalog_path = installed
        return self

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

    def replace(self, **changes: Any) -> Settings:
        """A copy with some values changed, unvalidated like `model_copy`: top-level fields by
        name, an area's fields as a mapping (`settings.replace(home=path, ml={"seed": 8})`).
        A name no field has is a TypeError, so a changed setting cannot go silently unused."""
        update: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in type(self).model_fields:
                raise TypeError(f"Settings has no field {name!r}")
            area = getattr(self, name)
            if isinstance(area, _Area) and isinstance(value, Mapping):
                unknown = set(value) - set(type(area).model_fields)
                if unknown:
                    raise TypeError(f"settings.{name} has no field {', '.join(sorted(unknown))}")
                value = area.model_copy(update=dict(value))
            update[name] = value
        return self.model_copy(update=update)

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"

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
    def api_token_path(self) -> Path:
        return self.api.token_file or self.home / "api-token"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use (never at import)."""
    return Settings()


AREAS: dict[str, type[_Area]] = {
    name: field.annotation
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Area)
}


@dataclass(frozen=True)
class Variable:
    """One setting: its EMPS_* variable and where it lands (`area` None: on Settings itself)."""

    name: str
    area: str | None
    field: str
    info: FieldInfo

    def value(self, settings: Settings) -> Any:
        return getattr(getattr(settings, self.area) if self.area else settings, self.field)


@cache
def variables() -> tuple[Variable, ...]:
    """Every setting, the top-level ones first, then area by area in declaration order."""
    found = [
        Variable(f"EMPS_{name.upper()}", None, name, info)
        for name, info in Settings.model_fields.items()
        if name not in AREAS
    ]
    for area, model in AREAS.items():
        for name, info in model.model_fields.items():
            alias = info.validation_alias
            variable = alias if isinstance(alias, str) else model.env_prefix + name.upper()
            found.append(Variable(variable, area, name, info))
    return tuple(found)


class _FlatBase(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMPS_", extra="ignore")


@cache
def _flat_variables() -> type[BaseSettings]:
    """A settings class with one field per variable, named as before the areas (ml_seed): what
    pydantic-settings' own environment and .env sources read, with their parsing unchanged.
    Never instantiated."""
    fields: dict[str, Any] = {
        v.name.removeprefix("EMPS_").lower(): (v.info.annotation, None) for v in variables()
    }
    return create_model("_FlatVariables", __base__=_FlatBase, **fields)


class _Nested(PydanticBaseSettingsSource):
    """Places what a flat source read (ml_seed) where the field lives (ml.seed)."""

    def __init__(self, settings_cls: type[BaseSettings], flat: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.flat = flat
        self.places = {v.name.removeprefix("EMPS_").lower(): (v.area, v.field) for v in variables()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key, value in self.flat().items():
            if key not in self.places:
                continue  # an unknown EMPS_* name in .env: unknown_variables() warns of it
            area, field = self.places[key]
            (values.setdefault(area, {}) if area else values)[field] = value
        return values


# EMPS_* variables the platform sets for its own children (prefect.yaml, dbt's profiles.yml),
# not settings.
NOT_SETTINGS = ("EMPS_PROJECT_ROOT", "EMPS_PUBLIC_HOST", "EMPS_DBT_")


def unknown_variables(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[str]:
    """A warning per EMPS_* variable in the environment or .env that no setting reads: settings
    ignore unknown names, so a typo or a setting that was removed would otherwise change nothing
    without a word."""
    known = {variable.name for variable in variables()}
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
