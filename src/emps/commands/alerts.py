"""`emps alerts|tasks|notify|mail`: the alert lifecycle, maintenance tasks, the notification
outbox and the local mail sink, from the command line."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from emps.settings import get_settings

alerts_app = typer.Typer(help="List, acknowledge and resolve alerts.", no_args_is_help=True)
tasks_app = typer.Typer(
    help="Maintenance tasks: list, create, reschedule, complete.", no_args_is_help=True
)
notify_app = typer.Typer(help="The notification outbox (ops.notifications).", no_args_is_help=True)
mail_app = typer.Typer(help="The local SMTP sink and its mailbox.", no_args_is_help=True)
console = Console()

ACTOR_HELP = "Who does it (recorded in the audit log); default: your login name"
STATUSES = ("open", "acknowledged", "resolved")


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(notify_app, name="notify")
    app.add_typer(mail_app, name="mail")


def _actor(by: str | None) -> str:
    return by or getpass.getuser()


def _fail(exc: Exception) -> typer.Exit:
    # Lifecycle functions raise messages written for people; show just the message.
    message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
    console.print(message, style="red", highlight=False, markup=False)
    return typer.Exit(1)


def _when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date or date-time") from exc
    if when.tzinfo is None:
        from zoneinfo import ZoneInfo

        when = when.replace(tzinfo=ZoneInfo(get_settings().timezone))
    return when


def _call(sql: str, params: tuple) -> tuple:
    import psycopg

    from emps.db import Role, connect, one

    try:
        with connect(Role.OWNER, get_settings()) as conn:
            return one(conn.execute(sql, params))
    except psycopg.Error as exc:
        raise _fail(exc) from exc


@alerts_app.command("list")
def alerts_list(
    status: list[str] = typer.Option(
        ["open", "acknowledged"], "--status", help="open, acknowledged, resolved (repeatable)"
    ),
    severity: list[str] = typer.Option(None, "--severity", help="HIGH, CRITICAL, ..."),
    site: str = typer.Option(None, help="Only this site"),
    limit: int = typer.Option(50, min=1),
) -> None:
    """Show alerts, newest first, with minutes to acknowledge."""
    from emps import queries

    bad = set(status) - set(STATUSES)
    if bad:
        raise typer.BadParameter(f"unknown status {sorted(bad)}; use {', '.join(STATUSES)}")
    rows = queries.alerts(
        statuses=status,
        severities=[s.upper() for s in severity] if severity else None,
        sites=[site] if site else None,
        limit=limit,
        settings=get_settings(),
    )
    table = Table(
        "id", "equipment", "site", "severity", "status", "created", "min to ack", "level", "message"
    )
    for r in rows.itertuples():
        table.add_row(
            str(r.alert_id),
            r.equipment_id,
            str(r.site or ""),
            r.severity,
            r.status,
            f"{r.created_at:%Y-%m-%d %H:%M}",
            ""
            if r.acknowledged_at is None or str(r.acknowledged_at) == "NaT"
            else f"{r.minutes_to_acknowledge:.1f}",
            str(r.escalation_level),
            r.message,
        )
    console.print(table)


@alerts_app.command("ack")
def alerts_ack(
    alert_id: int = typer.Argument(..., help="Alert id"),
    by: str = typer.Option(None, help=ACTOR_HELP),
    note: str = typer.Option(None, help="Optional note"),
) -> None:
    """Acknowledge an open alert (stops its escalation)."""
    row = _call(
        "select status, acknowledged_at - created_at from ops.acknowledge_alert(%s, %s, %s)",
        (alert_id, _actor(by), note),
    )
    console.print(f"alert {alert_id} {row[0]} after {row[1]}")


@alerts_app.command("resolve")
def alerts_resolve(
    alert_id: int = typer.Argument(..., help="Alert id"),
    by: str = typer.Option(None, help=ACTOR_HELP),
    note: str = typer.Option(None, help="What was found or done"),
) -> None:
    """Resolve an alert."""
    row = _call("select status from ops.resolve_alert(%s, %s, %s)", (alert_id, _actor(by), note))
    console.print(f"alert {alert_id} {row[0]}")


@tasks_app.command("list")
def tasks_list(
    all_: bool = typer.Option(False, "--all", help="Include completed and cancelled tasks"),
    site: str = typer.Option(None, help="Only this site"),
    limit: int = typer.Option(100, min=1),
) -> None:
    """Show maintenance tasks, soonest first."""
    from emps.db import Role, connect

    with connect(Role.READER, get_settings()) as conn:
        rows = conn.execute(
            """
            select t.id, t.equipment_id, coalesce(e.site, ''), t.task_type, t.priority,
                   t.status, t.scheduled_date, coalesce(t.outcome, ''),
                   coalesce(t.alert_id::text, '')
            from ops.maintenance_tasks t left join raw.equipment e using (equipment_id)
            where (%(all)s or t.status in ('scheduled', 'in_progress'))
              and (%(site)s::text is null or e.site = %(site)s)
            order by t.scheduled_date limit %(limit)s
            """,
            {"all": all_, "site": site, "limit": limit},
        ).fetchall()
    table = Table(
        "id", "equipment", "site", "type", "priority", "status", "scheduled", "outcome", "alert"
    )
    for r in rows:
        table.add_row(
            str(r[0]), r[1], r[2], r[3], str(r[4]), r[5], f"{r[6]:%Y-%m-%d %H:%M}", r[7], r[8]
        )
    console.print(table)


@tasks_app.command("create")
def tasks_create(
    equipment_id: str = typer.Argument(...),
    task_type: str = typer.Option(
        "inspection", "--type", help="inspection, corrective, preventive, repair"
    ),
    priority: int = typer.Option(3, min=1, max=5, help="1 (most urgent) to 5"),
    date: str = typer.Option(..., help="When (ISO date or date-time; EMPS_TIMEZONE if no offset)"),
    alert: int = typer.Option(None, help="The alert this task answers"),
    note: str = typer.Option(None),
    by: str = typer.Option(None, help=ACTOR_HELP),
) -> None:
    """Schedule maintenance for an equipment."""
    row = _call(
        "select id from ops.create_maintenance_task(%s, %s, %s, %s, %s, %s, %s)",
        (equipment_id, task_type, priority, _when(date), _actor(by), alert, note),
    )
    console.print(f"task {row[0]} scheduled for {equipment_id}")


@tasks_app.command("reschedule")
def tasks_reschedule(
    task_id: int = typer.Argument(...),
    date: str = typer.Option(..., help="New date (ISO)"),
    note: str = typer.Option(None),
    by: str = typer.Option(None, help=ACTOR_HELP),
) -> None:
    """Move a task to another date."""
    row = _call(
        "select scheduled_date from ops.reschedule_maintenance_task(%s, %s, %s, %s)",
        (task_id, _when(date), _actor(by), note),
    )
    console.print(f"task {task_id} now scheduled {row[0]:%Y-%m-%d %H:%M %Z}")


@tasks_app.command("complete")
def tasks_complete(
    task_id: int = typer.Argument(...),
    outcome: str = typer.Option(..., help="fault_found, no_fault_found or failed_before_service"),
    note: str = typer.Option(None),
    at: str = typer.Option(
        None, help="When the work was done (ISO-8601, default now): a service typed in later"
    ),
    by: str = typer.Option(None, help=ACTOR_HELP),
) -> None:
    """Complete a task with its outcome (the label the model learns from): failed_before_service
    records the failure it found, fault_found a prevented failure."""
    row = _call(
        "select status, outcome, completed_date "
        "from ops.complete_maintenance_task(%s, %s, %s, %s, %s)",
        (task_id, outcome, _actor(by), note, _when(at) if at else None),
    )
    console.print(f"task {task_id} {row[0]} {row[2]:%Y-%m-%d %H:%M %Z}: {row[1]}")


@notify_app.command("send")
def notify_send(limit: int = typer.Option(500, min=1, help="Rows claimed in this run")) -> None:
    """Deliver the due notifications now (what the send-notifications deployment does)."""
    from emps.alerting.outbox import send_notifications

    with console.status("sending notifications"):
        report = send_notifications(get_settings(), limit=limit)
    for error in dict.fromkeys(report.errors):
        console.print(error, style="red", highlight=False, markup=False)
    console.print(str(report))
    if report.errors and not report.sent:
        raise typer.Exit(1)


@notify_app.command("status")
def notify_status() -> None:
    """Count outbox rows by status, say how long the oldest due one has waited, and show the
    last errors."""
    from emps.alerting.backlog import backlog
    from emps.db import Role, connect

    settings = get_settings()
    with connect(Role.OWNER, settings) as conn:
        counts = conn.execute(
            "select status, count(*) from ops.notifications group by 1 order by 1"
        ).fetchall()
        errors = conn.execute(
            "select id, recipient, status, attempts, last_error from ops.notifications"
            " where last_error is not null order by id desc limit 10"
        ).fetchall()
        waiting = backlog(conn)
    console.print(", ".join(f"{s}: {n}" for s, n in counts) or "outbox empty")
    if waiting.waiting:
        late = waiting.oldest_age_s > settings.notifications.pending_alert_s
        console.print(
            waiting.describe(settings), style="red" if late else None, highlight=False, markup=False
        )
    for row in errors:
        console.print(
            f"#{row[0]} {row[1]} {row[2]} after {row[3]} attempts: {row[4]}",
            highlight=False,
            markup=False,
        )


@mail_app.command("serve")
def mail_serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(None, help="Default: EMPS_SMTP_PORT"),
) -> None:
    """Run a local SMTP server storing each message once in <EMPS_HOME>/mailbox, until Ctrl-C."""
    import threading

    from emps.alerting.mailbox import start_sink

    settings = get_settings()
    directory = settings.home / "mailbox"
    controller, _ = start_sink(directory, host=host, port=port or settings.notifications.smtp_port)
    console.print(
        f"SMTP sink on {host}:{port or settings.notifications.smtp_port}, mailbox {directory}"
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


@mail_app.command("list")
def mail_list(
    limit: int = typer.Option(30, min=1, help="Newest N messages"),
    show: int = typer.Option(None, help="Print the text body of message number N"),
) -> None:
    """Show the messages in the local mailbox, oldest first."""
    from emps.alerting.mailbox import list_mailbox, read_mail

    mails = list_mailbox(get_settings().home / "mailbox")
    if show is not None:
        if not 1 <= show <= len(mails):
            raise typer.BadParameter(f"the mailbox has {len(mails)} messages")
        body = read_mail(mails[show - 1].path).get_body(("plain",))
        text = body.get_content() if body is not None else "(no text part)"
        console.print(text, highlight=False, markup=False)
        return
    table = Table("#", "date", "to", "subject")
    first = max(len(mails) - limit, 0)
    for number, mail in enumerate(mails[first:], start=first + 1):
        table.add_row(str(number), mail.date, mail.to, mail.subject)
    console.print(table)
    console.print(f"{len(mails)} messages at {datetime.now(UTC):%H:%M:%S} UTC")
