"""Operations alerts: what is wrong with the platform itself, told to the people who run it.

A rule is a name, a title and a function that looks at the platform's state (the database; the
Prefect API where it must) and returns findings. A finding names its subject, what is wrong
where ("ingest-sensor-drops", "landing/processing"): there is at most one open alert per rule and
subject. Each evaluation (the check-critical-alerts flow, every 5 minutes; `emps ops check`) runs
every rule and, for each:
- a finding with no open alert opens one (ops.operations_alerts) and, in the same transaction,
  queues an email through the notifications outbox (ops.notifications) to each recipient whose
  role is listed under `operations` in config/recipients.yaml (default: admin);
- a finding whose alert is open refreshes it, and mails again once EMPS_OPS_ALERT_RENOTIFY_HOURS
  (default 24) have passed since the last mail (0: one mail per alert);
- an open alert its rule no longer finds is resolved (no mail: the page and the metric show it).
A rule that fails (the Prefect API down, say) is logged and its alerts are left as they are.
Prometheus shows `emps_operations_alerts_open{rule="..."}` for every registered rule.

To add a rule, write a function of a `RuleContext` returning findings and register it (a
simpler `disk_low` than the one below):

    @operations_rule("disk_low", "Free disk space is low")
    def disk_low(ctx: RuleContext) -> list[Finding]:
        free = shutil.disk_usage(ctx.settings.home).free
        if free >= 5 << 30:
            return []
        return [Finding(str(ctx.settings.home), f"{free >> 30} GiB free", {"free": free})]

A rule in another module is registered when that module is imported: list it in RULE_MODULES.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from emps import disk, prefect_api
from emps.alerting.backlog import backlog
from emps.alerting.recipients import RecipientsConfig, load_recipients
from emps.db import Role, connect, one
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.alerting.operations")
EVENT = "operations.alert"
# Modules whose import registers rules (this one holds the first ones).
RULE_MODULES: tuple[str, ...] = ("emps.alerting.operations",)
INGEST_FLOW = "ingest-sensor-drops"
QUARANTINE_WINDOW = timedelta(minutes=15)
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Finding:
    """Something a rule found wrong: `subject` says where (one open alert per rule and
    subject), `summary` what, in one line; `details` are JSON-able facts for the mail and page."""

    subject: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RuleContext:
    """What a rule may look at."""

    conn: psycopg.Connection
    settings: Settings
    now: datetime
    prefect_api: str | None


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    check: Callable[[RuleContext], list[Finding]]


RULES: dict[str, Rule] = {}


def operations_rule(name: str, title: str):
    """Register the decorated function as the rule `name` (see the module docstring)."""

    def register(check: Callable[[RuleContext], list[Finding]]):
        RULES[name] = Rule(name, title, check)
        return check

    return register


def registered_rules() -> list[Rule]:
    """Every rule, after importing the modules that register them."""
    for module in RULE_MODULES:
        importlib.import_module(module)
    return list(RULES.values())


@dataclass
class OperationsReport:
    opened: list[tuple[str, str]] = field(default_factory=list)
    still_open: list[tuple[str, str]] = field(default_factory=list)
    resolved: list[tuple[str, str]] = field(default_factory=list)
    notifications: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def evaluate(
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
    recipients: RecipientsConfig | None = None,
    prefect_api: str | None = None,
    rules: list[Rule] | None = None,
) -> OperationsReport:
    """Run every rule once and open, refresh or resolve its alerts (see the module docstring)."""
    settings = settings or get_settings()
    recipients = recipients or load_recipients(settings=settings)
    now = now or datetime.now(UTC)
    report = OperationsReport()
    with connect(Role.ALERTING, settings, autocommit=True) as conn:
        context = RuleContext(conn, settings, now, prefect_api or os.environ.get("PREFECT_API_URL"))
        for rule in rules if rules is not None else registered_rules():
            try:
                findings = rule.check(context)
            except Exception as exc:  # one broken rule must not silence the others
                log.exception(
                    "operations rule %s failed; its alerts are left as they are", rule.name
                )
                report.failed[rule.name] = f"{type(exc).__name__}: {exc}"
                continue
            with conn.transaction():
                _apply(conn, rule, findings, recipients, settings, now, report)
    return report


def _prefect_api() -> str | None:
    """The Prefect API this process talks to: PREFECT_API_URL, or Prefect's own setting when
    Prefect is loaded already (inside a flow run)."""
    if api := os.environ.get("PREFECT_API_URL"):
        return api
    if "prefect" in sys.modules:
        from prefect.settings import get_current_settings

        return get_current_settings().api.url
    return None


def _apply(
    conn: psycopg.Connection,
    rule: Rule,
    findings: list[Finding],
    recipients: RecipientsConfig,
    settings: Settings,
    now: datetime,
    report: OperationsReport,
) -> None:
    cur = conn.cursor(row_factory=dict_row)
    open_alerts = {
        row["subject"]: row
        for row in cur.execute(
            "select * from ops.operations_alerts where rule = %s and status = 'open' for update",
            (rule.name,),
        ).fetchall()
    }
    renotify = timedelta(hours=settings.operations.renotify_hours)
    seen: set[str] = set()
    for finding in findings:
        if finding.subject in seen:
            continue
        seen.add(finding.subject)
        alert = open_alerts.get(finding.subject)
        if alert is None:
            alert = one(
                cur.execute(
                    "insert into ops.operations_alerts (rule, subject, summary, details, opened_at, "
                    "last_seen_at) values (%s, %s, %s, %s, %s, %s) returning *",
                    (
                        rule.name,
                        finding.subject,
                        _clean(finding.summary),
                        Jsonb(finding.details),
                        now,
                        now,
                    ),
                )
            )
            report.opened.append((rule.name, finding.subject))
            report.notifications += _notify(cur, rule, alert, recipients, settings, now)
            continue
        alert = one(
            cur.execute(
                "update ops.operations_alerts set summary = %s, details = %s, last_seen_at = %s "
                "where id = %s returning *",
                (_clean(finding.summary), Jsonb(finding.details), now, alert["id"]),
            )
        )
        report.still_open.append((rule.name, finding.subject))
        last = alert["last_notified_at"] or alert["opened_at"]
        if renotify > timedelta(0) and now - last >= renotify:
            report.notifications += _notify(cur, rule, alert, recipients, settings, now)
    for subject, alert in open_alerts.items():
        if subject not in seen:
            cur.execute(
                "update ops.operations_alerts set status = 'resolved', resolved_at = %s "
                "where id = %s",
                (now, alert["id"]),
            )
            report.resolved.append((rule.name, subject))


def _clean(text: str, limit: int = 500) -> str:
    text = _UNSAFE.sub(" ", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _notify(
    cur: psycopg.Cursor[dict[str, Any]],
    rule: Rule,
    alert: dict[str, Any],
    recipients: RecipientsConfig,
    settings: Settings,
    now: datetime,
) -> int:
    """Queue the alert's mail to the operations recipients; count the mail on the alert."""
    # The outbox brings the SMTP client along: kept out of the metrics server's imports, which
    # only need the rule names.
    from emps.alerting.outbox import enqueue_email

    people = recipients.for_operations()
    if not people:
        log.warning(
            "operations alert %s (%s) has nobody to tell: add a person with one of the roles %s "
            "to %s",
            rule.name,
            alert["subject"],
            list(recipients.operations),
            recipients.source or "the recipients file",
        )
    number = alert["notifications"] + 1
    subject, text, html = render(rule, alert, settings, reminder=number > 1)
    queued = 0
    for person in people:
        queued += enqueue_email(
            cur.connection,
            to=person.email or "",
            subject=subject,
            text=text,
            html=html,
            key=f"ops-{alert['id']}/{number}/email/{(person.email or '').lower()}",
            event=EVENT,
        )
    cur.execute(
        "update ops.operations_alerts set notifications = %s, last_notified_at = %s where id = %s",
        (number, now, alert["id"]),
    )
    return queued


def render(
    rule: Rule, alert: dict[str, Any], settings: Settings, reminder: bool = False
) -> tuple[str, str, str]:
    """(subject, text body, HTML body) of an operations alert mail; data is escaped in HTML."""
    prefix = "Still open: " if reminder else ""
    subject = _clean(f"[EMPS ops] {prefix}{rule.title}: {alert['summary']}", 200)
    link = f"{settings.dashboard.base_url.rstrip('/')}/data_quality"
    opened = alert["opened_at"].astimezone(UTC)
    facts = [
        ("What", rule.title),
        ("Where", alert["subject"]),
        ("Found", alert["summary"]),
        ("Open since", f"{opened:%Y-%m-%d %H:%M} UTC"),
        *((str(k), _clean(str(v), 300)) for k, v in (alert["details"] or {}).items()),
    ]
    hours = settings.operations.renotify_hours
    policy = (
        f"You are reminded every {hours:g} hours while it lasts."
        if hours > 0
        else "No reminder is sent while it lasts."
    )
    closing = f"This alert (rule {rule.name}) closes by itself once the condition clears. {policy}"
    text = "\n".join(
        [rule.title, "", *(f"{k}: {v}" for k, v in facts), "", closing, f"Data quality: {link}", ""]
    )
    rows = "".join(
        f"<tr><th align='left'>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in facts
    )
    html = (
        f"<!doctype html><html><body><h2>{escape(rule.title)}</h2><table>{rows}</table>"
        f'<p>{escape(closing)}</p><p><a href="{escape(link, quote=True)}">Data quality</a>'
        "</p></body></html>"
    )
    return subject, text, html


# -- the first rules: ingest -------------------------------------------------------------------


@operations_rule("ingest_run_failed", "Ingest run failed")
def ingest_run_failed(ctx: RuleContext) -> list[Finding]:
    """The last finished ingest run failed or crashed (clears when a later one completes)."""
    if not ctx.prefect_api:
        raise RuntimeError("PREFECT_API_URL is not set: the ingest runs cannot be looked at")
    body = {
        "flows": {"name": {"any_": [INGEST_FLOW]}},
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}},
        "sort": "END_TIME_DESC",
        "limit": 1,
    }
    with prefect_api.client(ctx.prefect_api, timeout=10) as api:
        response = api.post("/flow_runs/filter", json=body)
        response.raise_for_status()
        runs = response.json()
    if not runs or runs[0]["state_type"] == "COMPLETED":
        return []
    run = runs[0]
    state = (run.get("state") or {}).get("name") or run["state_type"].title()
    message = ((run.get("state") or {}).get("message") or "").strip()
    ended = run.get("end_time") or run.get("expected_start_time") or ""
    return [
        Finding(
            INGEST_FLOW,
            f"run {run['name']} ended {state} at {ended[:19]}: {message or 'no message'}",
            {"flow_run_id": run["id"], "state": state, "message": message[:500]},
        )
    ]


@operations_rule("ingest_claim_stale", "Ingest claims older than the claim timeout")
def ingest_claim_stale(ctx: RuleContext) -> list[Finding]:
    """Files claimed longer ago than EMPS_INGEST_CLAIM_TIMEOUT_S: the run holding them died.
    Claims a run gave back when the disk filled are waiting for space, not stuck (`disk_low`
    says so)."""
    timeout = ctx.settings.ingest.claim_timeout_s
    count, oldest, names = one(
        ctx.conn.execute(
            "select count(*), min(claimed_at), "
            "(array_agg(file_name order by claimed_at))[1:5] from raw.ingest_files "
            "where status = 'claimed' and claimed_by is not null and claimed_at < %s",
            (ctx.now - timedelta(seconds=timeout),),
        )
    )
    if not count:
        return []
    return [
        Finding(
            "landing/processing",
            f"{count} file(s) claimed for more than {timeout} s (EMPS_INGEST_CLAIM_TIMEOUT_S), "
            f"the oldest since {oldest.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC",
            {"files": count, "examples": ", ".join(names or [])},
        )
    ]


@operations_rule("quarantine_share", "Many quarantined rows")
def quarantine_share(ctx: RuleContext) -> list[Finding]:
    """More than EMPS_QUARANTINE_ALERT_SHARE of the rows of the files finished in the last
    15 minutes were quarantined (with at least EMPS_QUARANTINE_ALERT_MIN_ROWS rows)."""
    total, quarantined = one(
        ctx.conn.execute(
            "select coalesce(sum(rows_total), 0), coalesce(sum(rows_quarantined), 0) "
            "from raw.ingest_files where finished_at > %s and rows_total is not null",
            (ctx.now - QUARANTINE_WINDOW,),
        )
    )
    share = ctx.settings.operations.quarantine_alert_share
    if total < ctx.settings.operations.quarantine_alert_min_rows or quarantined <= share * total:
        return []
    reasons = ctx.conn.execute(
        "select left(reasons[1], 120) as reason, count(*) from raw.quarantined_rows "
        "where quarantined_at > %s and kind <> 'conflict' group by 1 order by 2 desc limit 3",
        (ctx.now - QUARANTINE_WINDOW,),
    ).fetchall()
    return [
        Finding(
            "ingest",
            f"{quarantined} of {total} rows ({quarantined / total:.0%}) quarantined in the last "
            f"15 minutes (alert above {share:.0%})",
            {
                "rows": int(total),
                "quarantined": int(quarantined),
                "top reasons": "; ".join(f"{n} x {r}" for r, n in reasons),
            },
        )
    ]


# -- the outbox ----------------------------------------------------------------------------------


@operations_rule("notifications_backlog", "Notifications are not going out")
def notifications_backlog(ctx: RuleContext) -> list[Finding]:
    """A notification due longer ago than EMPS_NOTIFY_PENDING_ALERT_S is still not sent (the
    SMTP server or SMS gateway refuses or is down): crews are not hearing about alerts."""
    waiting = backlog(ctx.conn, ctx.now)
    if waiting.oldest_age_s <= ctx.settings.notifications.pending_alert_s:
        return []
    return [
        Finding(
            "notifications",
            waiting.describe(ctx.settings),
            {
                "waiting": waiting.waiting,
                "oldest waiting (min)": round(waiting.oldest_age_s / 60),
                "last error": waiting.last_error or "none",
            },
        )
    ]


@operations_rule("default_partition_rows", "Rows in a DEFAULT partition")
def default_partition_rows(ctx: RuleContext) -> list[Finding]:
    """Readings or predictions of a month with no partition sit in their table's DEFAULT
    partition: the daily cleanup (which creates the months ahead) has not run, or a device sends
    times outside them. The next `emps db migrate` moves them into month partitions, under a lock
    that holds ingest while it copies them: the fewer, the better."""
    rows = ctx.conn.execute(
        "select parent, row_count, first_ts, last_ts from ops.default_partition_rows()"
        " where row_count > 0"
    ).fetchall()
    return [
        Finding(
            parent,
            f"{count:,}{'+' if count >= 100_000 else ''} rows in the DEFAULT partition, from "
            f"{first.astimezone(UTC):%Y-%m-%d %H:%M} to {last.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            {"rows": count, "first": first.isoformat(), "last": last.isoformat()},
        )
        for parent, count, first, last in rows
    ]


@operations_rule("service_given_up", "A platform service is down")
def service_given_up(ctx: RuleContext) -> list[Finding]:
    """A service of `emps up` kept crashing and the supervisor gave up restarting it (its log
    says why): that part of the platform stays down until someone restarts `emps up`."""
    try:
        state = json.loads((ctx.settings.run_dir / "services.json").read_text())
    except (FileNotFoundError, ValueError):
        return []  # no `emps up` on this home (a platform run some other way)
    return [
        Finding(
            service["name"],
            f"{service['name']} kept crashing: `emps up` gave up after {service['restarts']} "
            f"restarts (log: {service['log']})",
            {"restarts": service["restarts"], "log": service["log"]},
        )
        for service in state.get("services", [])
        if service.get("given_up")
    ]


@operations_rule("disk_low", "Free disk space is low")
def disk_low(ctx: RuleContext) -> list[Finding]:
    """Free disk under the home, the landing zone or the database's data is below
    EMPS_DISK_WARN_FREE_MB (subject "warning") or EMPS_DISK_CRITICAL_FREE_MB ("critical": a new
    alert, mailed again). Below EMPS_INGEST_MIN_FREE_MB ingest pauses; a full disk stops
    PostgreSQL."""
    space = disk.lowest(ctx.settings)
    levels = (
        ("critical", ctx.settings.operations.disk_critical_free_mb),
        ("warning", ctx.settings.operations.disk_warn_free_mb),
    )
    for level, limit_mb in levels:
        if space.free < limit_mb * disk.MB:
            return [
                Finding(
                    level,
                    f"{space.describe()}, below {limit_mb:,} MB; ingest pauses below "
                    f"{ctx.settings.ingest.min_free_mb:,} MB (drop files then wait in incoming/)",
                    {
                        "free (MB)": space.free // disk.MB,
                        "limit (MB)": limit_mb,
                        "folder": str(space.path),
                    },
                )
            ]
    return []
