"""The 08:00 maintenance report email: the day's tasks, open alerts and fleet health, with the
fleet report (PDF + CSV from emps.reports) and the day's task list (CSV) attached.

Queued through the outbox with one dedupe key per day and recipient, so a re-run the same day
sends nothing twice.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from emps import queries
from emps.alerting.outbox import enqueue_email
from emps.alerting.recipients import RecipientsConfig, load_recipients
from emps.db import Role, connect
from emps.reports import build_report, spreadsheet_safe
from emps.settings import Settings, get_settings

log = logging.getLogger(__name__)

TASK_COLUMNS = [
    "task_id",
    "equipment_id",
    "equipment_type",
    "site",
    "task_type",
    "priority",
    "status",
    "scheduled_date",
    "alert_id",
]
ALERT_COLUMNS = ["alert_id", "equipment_id", "site", "severity", "status", "created_at", "message"]


@dataclass(frozen=True)
class DailyReport:
    day: str
    files: list[Path]
    queued: int
    tasks: int
    open_alerts: int
    fleet_report: bool  # False when emps.reports could not build the PDF (reason logged)


def _csv(rows: list[dict], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: v.isoformat() if isinstance(v, datetime) else spreadsheet_safe(v)
                for k, v in row.items()
            }
        )
    return out.getvalue().encode()


def _html_table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table border='1' cellpadding='3'><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)


def _fleet_report(settings: Settings, start: datetime, end: datetime, folder: Path):
    """The shared fleet report (PDF + CSV) or None when it cannot be built (e.g. no marts yet)."""
    try:
        report = build_report("fleet", start, end, settings=settings)
        pdf = folder / report.filename("pdf")
        pdf.write_bytes(report.pdf_bytes())
        fleet_csv = folder / report.filename("csv")
        fleet_csv.write_bytes(report.csv_bytes())
        return report.summary(), [pdf, fleet_csv]
    except (ImportError, psycopg.Error, ValueError) as exc:
        log.warning("daily report: fleet report not attached (%s)", exc)
        return None, []


def queue_daily_report(
    settings: Settings | None = None,
    recipients: RecipientsConfig | None = None,
    now: datetime | None = None,
) -> DailyReport:
    """Build the day's report files under <home>/reports/daily/<day>/ and queue the emails."""
    settings = settings or get_settings()
    recipients = recipients or load_recipients(settings=settings)
    tz = ZoneInfo(settings.timezone)
    now = now or datetime.now(UTC)
    local = now.astimezone(tz)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # "Today's" work is the next 24 h: the 08:00 report then also shows the early hours of
    # tomorrow, which the night shift needs to see before they start.
    horizon = now + timedelta(days=1)
    day = f"{day_start:%Y-%m-%d}"
    folder = settings.home / "reports" / "daily" / day
    folder.mkdir(parents=True, exist_ok=True)

    tasks = queries.tasks_due(horizon, settings)
    alerts = queries.open_alerts(settings)
    tasks_csv = folder / f"maintenance-tasks-{day}.csv"
    tasks_csv.write_bytes(_csv(tasks, TASK_COLUMNS))
    summary, fleet_files = _fleet_report(settings, now - timedelta(days=1), now, folder)
    files = [*fleet_files, tasks_csv]

    overdue = sum(1 for t in tasks if t["scheduled_date"] < now)
    health = (
        ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in summary.items())
        if summary
        else "fleet report unavailable today (see the attached task list)"
    )
    subject = (
        f"[EMPS] Maintenance report {day}: {len(tasks)} tasks due"
        f" ({overdue} overdue), {len(alerts)} open alerts"
    )
    text = "\n".join(
        [
            f"Maintenance report for {day} ({settings.timezone})",
            "",
            f"Fleet health (last 24 h): {health}",
            "",
            f"Tasks due in the next 24 h or overdue ({len(tasks)}):",
            *[
                f"  #{t['task_id']} {t['scheduled_date']:%Y-%m-%d %H:%M} {t['equipment_id']}"
                f" ({t['site']}) {t['task_type']} priority {t['priority']}"
                for t in tasks
            ],
            "",
            f"Open alerts ({len(alerts)}):",
            *[
                f"  #{a['alert_id']} {a['severity']} {a['equipment_id']} ({a['site']})"
                f" {a['status']}: {a['message']}"
                for a in alerts
            ],
            "",
            f"Dashboard: {settings.dashboard.base_url.rstrip('/')}/maintenance",
            "",
        ]
    )
    html = (
        "<!doctype html><html><body>"
        f"<h2>Maintenance report for {escape(day)}</h2>"
        f"<p>Fleet health (last 24 h): {escape(health)}</p>"
        f"<h3>Tasks due in the next 24 h or overdue ({len(tasks)})</h3>{_html_table(tasks, TASK_COLUMNS)}"
        f"<h3>Open alerts ({len(alerts)})</h3>{_html_table(alerts, ALERT_COLUMNS)}"
        f'<p><a href="{escape(settings.dashboard.base_url.rstrip("/"))}/maintenance">'
        "Open the maintenance page</a></p></body></html>"
    )
    queued = 0
    with connect(Role.ALERTING, settings) as conn, conn.transaction():
        for person in recipients.for_daily_report():
            if person.email is None:  # for_daily_report lists people with an address only
                continue
            queued += enqueue_email(
                conn,
                to=person.email,
                subject=subject,
                text=text,
                html=html,
                key=f"report-daily/{day}/{person.email.lower()}",
                event="report.daily",
                attachments=files,
                settings=settings,
            )
    return DailyReport(day, files, queued, len(tasks), len(alerts), summary is not None)
