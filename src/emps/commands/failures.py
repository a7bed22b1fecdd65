"""`emps failures record|import|list`: failures as they happen become labels the model learns from."""

from __future__ import annotations

import csv
import getpass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from emps.commands.alerts import _fail, _when
from emps.settings import get_settings

app = typer.Typer(
    help="Failures: record one, import a file of them, list them (they label the history).",
    no_args_is_help=True,
)
console = Console()


def _record(conn, equipment: str, failed_at, mode: str | None, by: str, note, repaired_at):
    return conn.execute(
        "select id, failed_at from ops.record_failure(%s, %s, %s, %s, %s, %s)",
        (equipment, failed_at, mode, by, note, repaired_at),
    ).fetchone()


@app.command()
def record(
    equipment: str = typer.Argument(..., help="Equipment id"),
    at: str = typer.Option(..., "--at", help="When it failed (ISO-8601; local time zone if bare)"),
    mode: str = typer.Option(None, help="Failure mode, e.g. 'bearing wear'"),
    repaired: str = typer.Option(None, help="When it ran again (ISO-8601), if it has"),
    note: str = typer.Option(None),
    by: str = typer.Option(None, help="Who records it (default: your login)"),
) -> None:
    """Record a failure (audited): the model's next training counts the hours before it as
    leading to a failure."""
    import psycopg

    from emps.db import Role, connect

    try:
        with connect(Role.OWNER, get_settings()) as conn:
            row = _record(
                conn,
                equipment,
                _when(at),
                mode,
                by or getpass.getuser(),
                note,
                _when(repaired) if repaired else None,
            )
    except psycopg.Error as exc:
        raise _fail(exc) from exc
    console.print(f"failure #{row[0]} of {equipment} at {row[1]:%Y-%m-%d %H:%M %Z} recorded")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV of failures"),
    by: str = typer.Option(None, help="Who records them (default: your login)"),
) -> None:
    """Record the failures of a CSV file: equipment_id, failed_at, failure_mode[, repaired_at,
    notes]. Failures already recorded are left as they are; each refused row is named."""
    import psycopg

    from emps.db import Role, connect

    actor = by or getpass.getuser()
    added, known, refused = 0, 0, []
    with file.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with connect(Role.OWNER, get_settings(), autocommit=True) as conn:
        for number, row in enumerate(rows, 2):
            try:
                failed_at = _when(row.get("failed_at") or "")
                repaired = _when(row["repaired_at"]) if row.get("repaired_at") else None
            except typer.BadParameter as error:
                refused.append(f"{file.name}, row {number}: {error.message}")
                continue
            try:
                _record(
                    conn,
                    (row.get("equipment_id") or "").strip(),
                    failed_at,
                    row.get("failure_mode"),
                    actor,
                    row.get("notes") or None,
                    repaired,
                )
                added += 1
            except psycopg.errors.UniqueViolation:
                known += 1
            except psycopg.Error as exc:
                message = getattr(exc.diag, "message_primary", None) or str(exc)
                refused.append(f"{file.name}, row {number}: {message}")
    console.print(f"{added} failure(s) recorded, {known} already there, {len(refused)} refused")
    for line in refused:
        console.print(f"  {line}", highlight=False, markup=False)
    if refused:
        raise typer.Exit(1)


@app.command("list")
def list_(
    equipment: str = typer.Option(None, help="Only this equipment"),
    limit: int = typer.Option(50, min=1),
) -> None:
    """The latest failures (prevented ones: a fault found in time)."""
    from emps.db import Role, connect

    with connect(Role.READER, get_settings()) as conn:
        rows = conn.execute(
            "select equipment_id, failed_at, coalesce(failure_mode, ''), source, prevented, "
            "repaired_at from raw.failure_events where %(e)s::text is null or equipment_id = %(e)s "
            "order by failed_at desc limit %(n)s",
            {"e": equipment, "n": limit},
        ).fetchall()
    table = Table(title="failures")
    for column in ("equipment", "failed at", "mode", "recorded by", "prevented", "repaired at"):
        table.add_column(column)
    for equipment_id, failed_at, mode, source, prevented, repaired_at in rows:
        table.add_row(
            equipment_id,
            f"{failed_at:%Y-%m-%d %H:%M}",
            mode,
            source,
            "yes" if prevented else "",
            f"{repaired_at:%Y-%m-%d %H:%M}" if repaired_at else "",
        )
    console.print(table)
