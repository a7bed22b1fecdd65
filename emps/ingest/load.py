"""Database side of ingest: the file ledger, the equipment registry lookup, and the load.

A load group runs in ONE transaction: good rows are COPYed into a temporary staging table,
bad rows into raw.quarantined_rows, then `insert ... on conflict do nothing` moves the staged
rows into raw.sensor_readings and the ledger rows get their final counts. A crash anywhere
before the commit leaves nothing behind but the 'claimed' ledger rows, which a later run takes
back.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from emps.catalog import Catalog
from emps.ingest.landing import ClaimedFile
from emps.ingest.parse import PROBLEM, ROW

LOAD_LOCK_KEY = 7_410_553  # pg_advisory_xact_lock: one ingest load commits at a time
FINISHED = ("loaded", "partial", "duplicate", "quarantined")
STAGE = "ingest_stage"
INTERNAL_COLUMNS = {"ingest_file_id", ROW, PROBLEM}


@dataclass
class LedgerRow:
    id: int
    stored_name: str
    file_name: str
    sha256: str
    size_bytes: int
    received_at: datetime
    status: str
    claimed_at: datetime
    rows_total: int | None
    error: str | None
    claimed_by: str | None


def ledger_by_stored_name(conn: psycopg.Connection, names: list[str]) -> dict[str, LedgerRow]:
    rows = conn.execute(
        "select id, stored_name, file_name, sha256, size_bytes, received_at, status, claimed_at, "
        "rows_total, error, claimed_by from raw.ingest_files where stored_name = any(%s)",
        (names,),
    ).fetchall()
    return {row[1]: LedgerRow(*row) for row in rows}


def record_claims(
    conn: psycopg.Connection, files: list[ClaimedFile], flow_run_id: str | None, claimer: str
) -> None:
    """Insert (or take over) one ledger row per claimed file and set `ledger_id` on each."""
    if not files:
        return
    rows = conn.execute(
        """
        insert into raw.ingest_files
            (file_name, stored_name, sha256, size_bytes, received_at, status, flow_run_id,
             claimed_by)
        select * from unnest(%s::text[], %s::text[], %s::text[], %s::bigint[],
                             %s::timestamptz[], %s::text[], %s::text[], %s::text[])
        on conflict (stored_name) do update
            set claimed_at = now(), status = 'claimed', flow_run_id = excluded.flow_run_id,
                claimed_by = excluded.claimed_by
        returning id, stored_name
        """,
        (
            [f.original_name for f in files],
            [f.stored_name for f in files],
            [f.sha256 for f in files],
            [f.size_bytes for f in files],
            [f.received_at for f in files],
            ["claimed"] * len(files),
            [flow_run_id] * len(files),
            [claimer] * len(files),
        ),
    ).fetchall()
    ids = dict((name, id_) for id_, name in rows)
    for f in files:
        f.ledger_id = ids[f.stored_name]


def loaded_hashes(conn: psycopg.Connection, hashes: list[str]) -> dict[str, int]:
    """sha256 -> ledger id of the file with that content already loaded."""
    rows = conn.execute(
        "select sha256, min(id) from raw.ingest_files "
        "where sha256 = any(%s) and status in ('loaded', 'partial') group by sha256",
        (hashes,),
    ).fetchall()
    return dict(rows)


def mark_duplicates(conn: psycopg.Connection, duplicates: dict[int, int]) -> None:
    """Ledger id -> the ledger id whose identical content was loaded first."""
    if not duplicates:
        return
    conn.execute(
        """
        update raw.ingest_files f
        set status = 'duplicate', duplicate_of = d.first_id, finished_at = now(),
            rows_loaded = 0, error = 'same content as ingest file ' || d.first_id
        from unnest(%s::bigint[], %s::bigint[]) as d(id, first_id)
        where f.id = d.id
        """,
        (list(duplicates), list(duplicates.values())),
    )


def known_equipment(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute("select equipment_id from raw.equipment")}


def register_equipment(conn: psycopg.Connection, ids: Iterable[str], catalog: Catalog) -> list[str]:
    """Auto-register unknown equipment (setting `ingest_unknown_equipment=register`).

    The type comes from the id prefix the catalog declares (GEN-0001 -> generator); the site is
    unknown until an operator sets it.
    """
    prefixes = {t.id_prefix: t.name for t in catalog.equipment_types.values()}
    ids = sorted(ids)
    types = [prefixes.get(i.split("-")[0].upper(), "unknown") for i in ids]
    rows = conn.execute(
        """
        insert into raw.equipment (equipment_id, equipment_type, site, source)
        select id, type, 'unknown', 'ingest' from unnest(%s::text[], %s::text[]) as t(id, type)
        on conflict (equipment_id) do nothing
        returning equipment_id
        """,
        (ids, types),
    ).fetchall()
    return [row[0] for row in rows]


class LoadGroup:
    """Staging and quarantine writes of one transaction (see module docstring)."""

    def __init__(self, conn: psycopg.Connection, catalog: Catalog):
        self.conn = conn
        self.sensors = catalog.sensor_names
        self.columns = ["equipment_id", "ts", "ingest_file_id", ROW, *self.sensors]
        conn.execute(sql.SQL("select pg_advisory_xact_lock({})").format(LOAD_LOCK_KEY))
        conn.execute(
            sql.SQL(
                "create temporary table {} (like raw.sensor_readings including defaults, "
                "row_number integer) on commit drop"
            ).format(sql.Identifier(STAGE))
        )

    def stage(self, good: pd.DataFrame) -> None:
        if good.empty:
            return
        buffer = io.StringIO()
        good[self.columns].to_csv(buffer, index=False, header=False)
        copy_sql = sql.SQL("copy {} ({}) from stdin (format csv)").format(
            sql.Identifier(STAGE), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )
        with self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(buffer.getvalue())

    def quarantine(self, rows: list[tuple[int, str, int, str | None, list[str], dict]]) -> None:
        """Rows of (ledger id, file name, row number, equipment id, reasons, raw values)."""
        if not rows:
            return
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "copy raw.quarantined_rows (ingest_file_id, file_name, row_number, equipment_id, "
                "reasons, raw_values) from stdin"
            ) as copy,
        ):
            for file_id, name, row_number, equipment_id, reasons, raw in rows:
                copy.write_row((file_id, name, row_number, equipment_id, reasons, Jsonb(raw)))

    def discard(self, file_id: int) -> None:
        """Forget what a file staged before it turned out unreadable further down."""
        self.conn.execute(
            sql.SQL("delete from {} where ingest_file_id = %s").format(sql.Identifier(STAGE)),
            (file_id,),
        )
        self.conn.execute("delete from raw.quarantined_rows where ingest_file_id = %s", (file_id,))

    def insert(self) -> dict[int, tuple[int, int]]:
        """Move staged rows into raw.sensor_readings; ledger id -> (staged, inserted)."""
        target = sql.SQL(", ").join(
            map(sql.Identifier, ["equipment_id", "ts", "ingest_file_id", *self.sensors])
        )
        query = sql.SQL(
            """
            with inserted as (
                insert into raw.sensor_readings ({target})
                select {target} from {stage} order by ingest_file_id, row_number
                on conflict (equipment_id, ts) do nothing
                returning ingest_file_id
            ), staged as (
                select ingest_file_id, count(*) as n from {stage} group by 1
            )
            select s.ingest_file_id, s.n,
                   (select count(*) from inserted i where i.ingest_file_id = s.ingest_file_id)
            from staged s
            """
        ).format(target=target, stage=sql.Identifier(STAGE))
        return {row[0]: (row[1], row[2]) for row in self.conn.execute(query)}

    def finish_files(self, outcomes: list[dict[str, Any]]) -> None:
        """Write each file's final status and counts to the ledger (same transaction)."""
        if not outcomes:
            return
        keys = [
            "id",
            "format",
            "status",
            "rows_total",
            "rows_loaded",
            "rows_duplicate",
            "rows_quarantined",
            "error",
        ]
        columns = {key: [o[key] for o in outcomes] for key in keys}
        self.conn.execute(
            """
            update raw.ingest_files f
            set format = o.format, status = o.status, rows_total = o.rows_total,
                rows_loaded = o.rows_loaded, rows_duplicate = o.rows_duplicate,
                rows_quarantined = o.rows_quarantined, error = o.error, finished_at = now()
            from unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::int[], %s::int[],
                        %s::int[], %s::text[])
                as o(id, format, status, rows_total, rows_loaded, rows_duplicate,
                     rows_quarantined, error)
            where f.id = o.id
            """,
            [columns[key] for key in keys],
        )


def json_safe(value: Any) -> Any:
    """A raw value as JSON can hold it (NaN/inf as text, numpy scalars as Python)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return str(value)
    if isinstance(value, int | float | str | bool):
        return value
    return str(value)
