"""`emps ops check|list`: the operations alerts (the platform's own trouble) from the command line."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Operations alerts: failed ingest runs, stale claims, many quarantined rows, ...",
    no_args_is_help=True,
)
console = Console()


@app.command("check")
def check() -> None:
    """Run every operations rule now: open, refresh or resolve alerts and queue their mail
    (check-critical-alerts does this every 5 minutes). Exits 1 while an alert is open."""
    from emps.alerting import operations

    report = operations.evaluate()
    for name, error in report.failed.items():
        console.print(f"[red]rule {name} could not run:[/] {error}", highlight=False)
    for rule, subject in report.resolved:
        console.print(f"resolved: {rule} ({subject})", highlight=False)
    for rule, subject in report.opened:
        console.print(f"[yellow]opened:[/] {rule} ({subject})", highlight=False)
    console.print(
        f"{len(report.opened) + len(report.still_open)} open, {len(report.resolved)} resolved, "
        f"{report.notifications} mail(s) queued"
    )
    if report.opened or report.still_open:
        raise typer.Exit(1)


@app.command("list")
def list_alerts(
    all_: bool = typer.Option(False, "--all", help="Resolved alerts too (last 100)"),
) -> None:
    """Open operations alerts (with --all, resolved ones too)."""
    from emps.db import Role, connect

    with connect(Role.READER) as conn:
        rows = conn.execute(
            "select id, rule, subject, status, summary, opened_at, resolved_at "
            "from ops.operations_alerts where %s or status = 'open' "
            "order by opened_at desc limit 100",
            (all_,),
        ).fetchall()
    if not rows:
        console.print("no operations alert" + ("" if all_ else " open"))
        return
    table = Table("id", "rule", "subject", "status", "summary", "opened", "resolved")
    for row in rows:
        table.add_row(
            *(str(v) if v is not None else "" for v in row[:5]),
            f"{row[5]:%Y-%m-%d %H:%M}",
            f"{row[6]:%Y-%m-%d %H:%M}" if row[6] else "",
        )
    console.print(table)
