"""Database side of ingest: the file ledger, the equipment registry lookup, and the load.

A load group runs in ONE transaction: good rows are COPYed into raw.sensor_readings (or, when
their keys may exist already, into a temporary staging table and from there with
`insert ... on conflict do nothing`), bad rows into raw.quarantined_rows, and the ledger rows
get their final counts. A crash anywhere before the commit leaves nothing behind but the
'claimed' ledger rows, which a later run takes back.

A row whose (equipment, timestamp) is already stored is a duplicate when every reading value
is the same, and a conflict otherwise: the stored reading stays, the received one is kept in
raw.quarantined_rows (kind 'conflict') with both versions until an admin accepts or dismisses
it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from emps.catalog import Catalog
from emps.ingest.columns import reading_columns
from emps.ingest.landing import ClaimedFile
from emps.ingest.parse import ROW

# Look up existing keys only over a narrow time window; wider batches (history) use staging.
MAX_PROBE_SPAN = pd.Timedelta(days=2)
LOAD_LOCK_KEY = 7_410_553  # pg_advisory_xact_lock: one ingest load commits at a time
FINISHED = ("loaded", "partial", "duplicate", "conflict", "quarantined")
LOADED = ("loaded", "partial", "conflict")  # statuses of files whose rows were loaded
STAGE = "ingest_stage"


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
    attempts: int


def ledger_by_stored_name(conn: psycopg.Connection, names: list[str]) -> dict[str, LedgerRow]:
    rows = conn.execute(
        "select id, stored_name, file_name, sha256, size_bytes, received_at, status, claimed_at, "
        "rows_total, error, claimed_by, attempts from raw.ingest_files "
        "where stored_name = any(%s)",
        (names,),
    ).fetchall()
    return {row[1]: LedgerRow(*row) for row in rows}


def record_claims(
    conn: psycopg.Connection, files: list[ClaimedFile], flow_run_id: str | None, claimer: str
) -> None:
    """Insert (or take over, counting the attempt unless the claim was given back) one ledger
    row per claimed file; sets `ledger_id` and `attempts` on each."""
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
                claimed_by = excluded.claimed_by,
                attempts = raw.ingest_files.attempts
                    + (raw.ingest_files.claimed_by is not null)::int
        returning id, stored_name, attempts
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
    ids = {name: (id_, attempts) for id_, name, attempts in rows}
    for f in files:
        f.ledger_id, f.attempts = ids[f.stored_name]


def release_claims(conn: psycopg.Connection, ids: list[int]) -> None:
    """Give back claims whose files were not loaded (the disk filled up): no run holds them
    now (`claimed_by` null), so the next run takes them at once and does not count an attempt.
    Finished files are left as they are."""
    if ids:
        conn.execute(
            "update raw.ingest_files set claimed_by = null "
            "where id = any(%s) and status = 'claimed'",
            (ids,),
        )


def loaded_hashes(conn: psycopg.Connection, hashes: list[str]) -> dict[str, int]:
    """sha256 -> ledger id of the file with that content already loaded."""
    rows = conn.execute(
        "select sha256, min(id) from raw.ingest_files "
        "where sha256 = any(%s) and status = any(%s) group by sha256",
        (hashes, list(LOADED)),
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


def equipment_types(conn: psycopg.Connection) -> dict[str, str]:
    """Every registered equipment's type."""
    return dict(conn.execute("select equipment_id, equipment_type from raw.equipment").fetchall())


def register_equipment(conn: psycopg.Connection, ids: Iterable[str], catalog: Catalog) -> list[str]:
    """Auto-register unknown equipment (setting `ingest_unknown_equipment=register`).

    The type comes from an id prefix the catalog declares (a type with `id_prefix: GEN` takes
    GEN-0001), 'unknown' otherwise; no site until an operator sets it.
    """
    prefixes = {t.id_prefix: t.name for t in catalog.equipment_types.values() if t.id_prefix}
    ids = sorted(ids)
    types = [prefixes.get(i.split("-")[0].upper(), "unknown") for i in ids]
    rows = conn.execute(
        """
        insert into raw.equipment (equipment_id, equipment_type, site, source)
        select id, type, null, 'ingest' from unnest(%s::text[], %s::text[]) as t(id, type)
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
        self.sensors = reading_columns(catalog)
        self.columns = ["equipment_id", "ts", "ingest_file_id", ROW, *self.sensors]
        self.direct_ok = True
        self.direct_offered: Counter[int] = Counter()
        self.direct_inserted: Counter[int] = Counter()
        conn.execute(sql.SQL("select pg_advisory_xact_lock({})").format(LOAD_LOCK_KEY))
        conn.execute(
            sql.SQL(
                "create temporary table {} (like raw.sensor_readings including defaults, "
                "row_number integer) on commit drop"
            ).format(sql.Identifier(STAGE))
        )

    def copy_direct(self, candidates: pd.DataFrame) -> tuple[pd.Series, pd.Series] | None:
        """COPY rows straight into raw.sensor_readings (inside this transaction), skipping keys
        that already exist or repeat earlier in the batch; the same work as a plain COPY.

        Returns masks over `candidates`: (inserted, already stored), or None when this batch
        must go through staging instead (look-up too wide, or a key appeared meanwhile).
        Rows validation rejects afterwards are taken out again with `retract`.
        """
        if candidates.empty or not self.direct_ok:
            return None
        low, high = candidates["ts"].min(), candidates["ts"].max()
        if high - low > MAX_PROBE_SPAN:
            return None
        columns = sql.SQL(", ").join(map(sql.Identifier, ["equipment_id", "ts", *self.sensors]))
        existing = self.conn.execute(
            sql.SQL(
                "select {} from raw.sensor_readings "
                "where equipment_id = any(%s) and ts between %s and %s"
            ).format(columns),
            (
                candidates["equipment_id"].unique().tolist(),
                low.to_pydatetime(),
                high.to_pydatetime(),
            ),
        ).fetchall()
        keys = pd.MultiIndex.from_arrays([candidates["equipment_id"], candidates["ts"]])
        stored = np.zeros(len(candidates), dtype=bool)
        known = np.zeros(len(candidates), dtype=bool)
        if existing:
            found = pd.DataFrame(existing, columns=["equipment_id", "ts", *self.sensors])
            found["ts"] = pd.to_datetime(found["ts"], utc=True).dt.as_unit(candidates["ts"].dt.unit)
            found = found.set_index(["equipment_id", "ts"])
            known = keys.isin(found.index)
            if known.any():
                # A stored key with the same values is a duplicate; with other values it is
                # staged, and the conflict check after the insert keeps it with both versions.
                theirs = found.reindex(keys[known])[self.sensors].to_numpy(dtype=np.float64)
                ours = candidates.loc[known, self.sensors].to_numpy(
                    dtype=np.float64, na_value=np.nan
                )
                same = ((theirs == ours) | (np.isnan(theirs) & np.isnan(ours))).all(axis=1)
                stored[np.flatnonzero(known)[same]] = True
        inserted = ~known & ~keys.duplicated()
        fresh = candidates[inserted]
        target = sql.SQL(", ").join(
            map(sql.Identifier, ["equipment_id", "ts", "ingest_file_id", *self.sensors])
        )
        if fresh.empty:  # every key already stored or repeated: nothing to COPY
            index = candidates.index
            return pd.Series(inserted, index=index), pd.Series(stored, index=index)
        try:
            with (
                self.conn.transaction(),
                self.conn.cursor() as cur,
                cur.copy(
                    sql.SQL("copy raw.sensor_readings ({}) from stdin (format binary)").format(
                        target
                    )
                ) as copy,
            ):
                copy.write(BINARY_HEADER)
                copy.write(encode_binary(fresh, self.sensors, with_row_number=False))
                copy.write(BINARY_TRAILER)
        except psycopg.errors.UniqueViolation:
            # Someone else (e.g. a backfill) wrote one of these keys since the look-up.
            self.direct_ok = False
            return None
        index = candidates.index
        return pd.Series(inserted, index=index), pd.Series(stored, index=index)

    def retract(self, rows: pd.DataFrame) -> None:
        """Delete rows `copy_direct` inserted in this transaction that validation rejected."""
        if rows.empty:
            return
        self.conn.execute(
            "delete from raw.sensor_readings r "
            "using unnest(%s::text[], %s::timestamptz[]) as k(equipment_id, ts) "
            "where r.equipment_id = k.equipment_id and r.ts = k.ts",
            (rows["equipment_id"].tolist(), [t.to_pydatetime() for t in rows["ts"]]),
        )

    def count_direct(self, offered: pd.DataFrame, inserted: pd.DataFrame) -> None:
        """Per-file counts of direct rows: offered (inserted + already stored) and inserted."""
        self.direct_offered.update(offered["ingest_file_id"].value_counts().to_dict())
        self.direct_inserted.update(inserted["ingest_file_id"].value_counts().to_dict())

    def stage(self, good: pd.DataFrame) -> None:
        if good.empty:
            return
        copy_sql = sql.SQL("copy {} ({}) from stdin (format binary)").format(
            sql.Identifier(STAGE), sql.SQL(", ").join(map(sql.Identifier, self.columns))
        )
        with self.conn.cursor() as cur, cur.copy(copy_sql) as copy:
            copy.write(BINARY_HEADER)
            copy.write(encode_binary(good, self.sensors))
            copy.write(BINARY_TRAILER)

    def quarantine(
        self, rows: list[tuple[int, str, int, str | None, list[str], dict, str]]
    ) -> None:
        """Rows of (ledger id, file name, row number, equipment id, reasons, raw values, kind)."""
        if not rows:
            return
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "copy raw.quarantined_rows (ingest_file_id, file_name, row_number, equipment_id, "
                "reasons, raw_values, kind) from stdin"
            ) as copy,
        ):
            for file_id, name, row_number, equipment_id, reasons, raw, kind in rows:
                copy.write_row(
                    (
                        file_id,
                        text_safe(name),
                        row_number,
                        None if equipment_id is None else text_safe(equipment_id),
                        [text_safe(r) for r in reasons],
                        Jsonb({text_safe(k): _jsonb_safe(v) for k, v in raw.items()}),
                        kind,
                    )
                )

    def discard(self, file_id: int) -> None:
        """Forget what a file staged before it turned out unreadable further down."""
        self.conn.execute(
            sql.SQL("delete from {} where ingest_file_id = %s").format(sql.Identifier(STAGE)),
            (file_id,),
        )
        self.conn.execute("delete from raw.quarantined_rows where ingest_file_id = %s", (file_id,))

    def insert(self) -> dict[int, tuple[int, int, int]]:
        """Move staged rows into raw.sensor_readings and keep the conflicting ones in quarantine;
        ledger id -> (rows offered, inserted, conflicts)."""
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
            ), inserted_per_file as (
                select ingest_file_id, count(*) as n from inserted group by 1
            ), staged_per_file as (
                select ingest_file_id, count(*) as n from {stage} group by 1
            )
            select s.ingest_file_id, s.n, coalesce(i.n, 0)
            from staged_per_file s left join inserted_per_file i using (ingest_file_id)
            """
        ).format(target=target, stage=sql.Identifier(STAGE))
        counts = {row[0]: (row[1], row[2], 0) for row in self.conn.execute(query)}
        if counts:
            for file_id, n in self._keep_conflicts().items():
                staged, inserted, _ = counts[file_id]
                counts[file_id] = (staged, inserted, n)
        for file_id, offered in self.direct_offered.items():
            staged, inserted, conflicts = counts.get(file_id, (0, 0, 0))
            counts[file_id] = (
                staged + offered,
                inserted + self.direct_inserted[file_id],
                conflicts,
            )
        return counts

    def _keep_conflicts(self) -> dict[int, int]:
        """Staged rows whose stored reading (from an earlier file, or an earlier file of this
        group) has other values: quarantined with both versions. Ledger id -> count."""
        s = [sql.SQL("s.{}").format(sql.Identifier(c)) for c in self.sensors]
        r = [sql.SQL("r.{}").format(sql.Identifier(c)) for c in self.sensors]
        names = [sql.Literal(c) for c in self.sensors]
        differs = sql.SQL(" or ").join(
            sql.SQL("{} is distinct from {}").format(a, b) for a, b in zip(s, r, strict=True)
        )
        received = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(n, a) for n, a in zip(names, s, strict=True)
        )
        stored = sql.SQL(", ").join(
            sql.SQL("{}, {}").format(n, b) for n, b in zip(names, r, strict=True)
        )
        differences = sql.SQL(", ").join(
            sql.SQL(
                "case when {a} is distinct from {b} then format('%s %s (stored %s)', {n}, "
                "coalesce({a}::text, 'empty'), coalesce({b}::text, 'empty')) end"
            ).format(a=a, b=b, n=n)
            for a, b, n in zip(s, r, names, strict=True)
        )
        query = sql.SQL(
            """
            with conflicting as (
                select s.ingest_file_id, s.row_number, s.equipment_id, s.ts,
                       r.ingest_file_id as stored_file,
                       jsonb_build_object('equipment_id', s.equipment_id, 'timestamp', s.ts,
                                          {received}) as received,
                       jsonb_build_object({stored}) as stored,
                       concat_ws(', ', {differences}) as differences
                from {stage} s
                join raw.sensor_readings r on r.equipment_id = s.equipment_id and r.ts = s.ts
                where {differs}
            ), kept as (
                insert into raw.quarantined_rows (ingest_file_id, file_name, row_number,
                    equipment_id, reasons, raw_values, kind, stored_values)
                select c.ingest_file_id, f.file_name, c.row_number, c.equipment_id,
                       array[format(
                           'conflict: %s already has a different reading at %s (stored from '
                           'ingest file %s): %s; the stored reading stays until an admin '
                           'accepts this one', c.equipment_id,
                           to_char(c.ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                           coalesce(c.stored_file::text, 'unknown'), c.differences)],
                       c.received, 'conflict', c.stored
                from conflicting c join raw.ingest_files f on f.id = c.ingest_file_id
                returning ingest_file_id
            )
            select ingest_file_id, count(*) from kept group by 1
            """
        ).format(
            received=received,
            stored=stored,
            differences=differences,
            differs=differs,
            stage=sql.Identifier(STAGE),
        )
        return {row[0]: row[1] for row in self.conn.execute(query)}

    def finish_files(self, outcomes: list[dict[str, Any]]) -> None:
        """Write each file's final status, counts and warnings to the ledger (same transaction)."""
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
            "rows_conflict",
            "error",
        ]
        columns = {key: [o[key] for o in outcomes] for key in keys}
        columns["error"] = [None if e is None else text_safe(e) for e in columns["error"]]
        warnings = [Jsonb([text_safe(w) for w in o.get("warnings") or []]) for o in outcomes]
        self.conn.execute(
            """
            update raw.ingest_files f
            set format = o.format, status = o.status, rows_total = o.rows_total,
                rows_loaded = o.rows_loaded, rows_duplicate = o.rows_duplicate,
                rows_quarantined = o.rows_quarantined, rows_conflict = o.rows_conflict,
                error = o.error, finished_at = now(),
                warnings = array(select jsonb_array_elements_text(o.warnings))
            from unnest(%s::bigint[], %s::text[], %s::text[], %s::int[], %s::int[], %s::int[],
                        %s::int[], %s::int[], %s::text[], %s::jsonb[])
                as o(id, format, status, rows_total, rows_loaded, rows_duplicate,
                     rows_quarantined, rows_conflict, error, warnings)
            where f.id = o.id
            """,
            [*(columns[key] for key in keys), warnings],
        )


BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
BINARY_TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds


def encode_binary(frame: pd.DataFrame, sensors: list[str], with_row_number: bool = True) -> bytes:
    """Rows (equipment_id, ts, ingest_file_id, [row_number,] sensors...) in PostgreSQL's binary
    COPY format, built with numpy: formatting 100K rows as CSV text costs more than the load.

    Rows sharing an id length and a pattern of empty readings have one binary layout: each such
    group is one numpy record array, written out whole (the order of COPY rows is immaterial:
    keys are unique, and staged rows are inserted in file and row order)."""
    if frame.empty:
        return b""
    codes, uniques = pd.factorize(frame["equipment_id"])
    encoded = np.array([str(u).encode() for u in uniques], dtype=object)
    unique_len = np.array([len(b) for b in encoded], dtype=np.int64)
    id_len = unique_len[codes]
    ts_us = (frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")).view(
        np.int64
    ) - PG_EPOCH_US
    files = frame["ingest_file_id"].to_numpy(dtype=np.int64)
    rows = frame[ROW].to_numpy(dtype=np.int64) if with_row_number else None
    values = frame[sensors].to_numpy(dtype=np.float64, na_value=np.nan)
    null = np.isnan(values)
    # One key per layout: the id's length and which readings are empty.
    weights = (1 << np.arange(null.shape[1], dtype=np.int64)) if null.shape[1] else np.zeros(0)
    pattern = (
        (null.astype(np.int64) * weights).sum(axis=1) if null.shape[1] else np.zeros(len(frame))
    )
    layout = id_len * (1 << max(null.shape[1], 1)) + pattern.astype(np.int64)
    parts = []
    for key in np.unique(layout):
        members = np.flatnonzero(layout == key)
        length = int(id_len[members[0]])
        empty = null[members[0]]
        fields = [
            ("count", ">i2"),
            ("id_size", ">i4"),
            ("id", f"S{length}"),
            ("ts_size", ">i4"),
            ("ts", ">i8"),
            ("file_size", ">i4"),
            ("file", ">i8"),
        ]
        if with_row_number:
            fields += [("row_size", ">i4"), ("row", ">i4")]
        for number, missing in enumerate(empty):
            fields.append((f"size_{number}", ">i4"))
            if not missing:
                fields.append((f"value_{number}", ">f8"))
        block = np.empty(len(members), dtype=np.dtype(fields))
        block["count"] = 3 + with_row_number + len(sensors)
        block["id_size"] = length
        block["id"] = encoded[codes[members]].astype(f"S{length}") if length else b""
        block["ts_size"] = 8
        block["ts"] = ts_us[members]
        block["file_size"] = 8
        block["file"] = files[members]
        if rows is not None:
            block["row_size"] = 4
            block["row"] = rows[members]
        for number, missing in enumerate(empty):
            block[f"size_{number}"] = -1 if missing else 8
            if not missing:
                block[f"value_{number}"] = values[members, number]
        parts.append(block.tobytes())
    return b"".join(parts)


def text_safe(text: str) -> str:
    """Text PostgreSQL stores: no NUL characters (they become U+FFFD)."""
    return text.replace("\x00", "\ufffd")


def _jsonb_safe(value: Any) -> Any:
    return text_safe(value) if isinstance(value, str) else value


def json_safe(value: Any) -> Any:
    """A raw value as JSON can hold it (NaN/inf as text, numpy scalars as Python, no NULs)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return str(value)
    if isinstance(value, str):
        return text_safe(value)
    if isinstance(value, bool | int | float):
        return value
    return text_safe(str(value))
