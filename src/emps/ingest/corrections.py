"""Corrected readings: rebuild the features of the window each one feeds, and rescore it.

An admin who accepts a conflict (the Data quality page, `ops.admin_accept_conflict`) replaces a
stored reading and queues an ops.reading_corrections row. The next ingest run applies it:
1. the window the reading feeds is its equipment's feature rows from the reading's time to the
   longest feature window after it (the catalog's longest, as time);
2. the window's readings are marked re-ingested (`ingested_at = now()`), so the next
   incremental `dbt build` recomputes their slots and the feature rows of those slots, exactly
   as it computes the features of new readings;
3. the build runs (taking its turn on the build lock);
4. every prediction of that equipment in the window is scored again from the rebuilt features;
   each new prediction names the correction, and the one it replaces keeps a note saying why it
   is no longer current.
The equipment's site level of those hours is recomputed with them; the features of the other
machines of that site keep the level they were built with until their own next rebuild.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from psycopg import sql

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.settings import Settings, get_settings

MAX_PER_RUN = 200


@dataclass(frozen=True)
class Correction:
    id: int
    equipment_id: str
    ts: datetime
    accepted_by: str
    accepted_at: datetime


@dataclass
class CorrectionsReport:
    applied: list[int] = field(default_factory=list)
    rescored: int = 0
    note: str | None = None


def feature_window(settings: Settings | None = None) -> timedelta:
    """The longest feature window of any type, as (derived) time: how far a reading reaches."""
    catalog = load_catalog((settings or get_settings()).catalog_path)
    return timedelta(
        seconds=max(
            t.slot_seconds * t.features.windows[-1] for t in catalog.equipment_types.values()
        )
    )


def pending_corrections(settings: Settings | None = None) -> list[Correction]:
    with connect(Role.INGEST, settings or get_settings()) as conn:
        rows = conn.execute(
            "select id, equipment_id, ts, accepted_by, accepted_at from ops.reading_corrections "
            "where applied_at is null order by id limit %s",
            (MAX_PER_RUN,),
        ).fetchall()
    return [Correction(*row) for row in rows]


def reopen_windows(corrections: list[Correction], settings: Settings) -> None:
    """Mark the windows' readings re-ingested (one transaction): the next build recomputes their
    slots and feature rows."""
    window = feature_window(settings)
    with connect(Role.INGEST, settings) as conn, conn.transaction():
        for correction in corrections:
            conn.execute(
                "update raw.sensor_readings set ingested_at = now() "
                "where equipment_id = %s and ts >= %s and ts < %s",
                (correction.equipment_id, correction.ts, correction.ts + window),
            )


def features_to_rescore(
    corrections: list[Correction], settings: Settings
) -> list[tuple[Correction, pd.DataFrame, list[tuple[int, datetime, datetime]]]]:
    """Per correction: the rebuilt feature rows of the slots its window had predictions in, and
    those predictions as (id, ts, ts of the feature row of their slot)."""
    window = feature_window(settings)
    table = sql.Identifier(*settings.ml.features_relation.split("."))
    found: list[tuple[Correction, pd.DataFrame, list[tuple[int, datetime, datetime]]]] = []
    with connect(Role.READER, settings) as conn:
        conn.execute("set time zone 'UTC'")
        for correction in corrections:
            span = (correction.equipment_id, correction.ts, correction.ts + window)
            predictions = conn.execute(
                "select id, ts from ops.predictions where equipment_id = %s and ts >= %s "
                "and ts < %s and (note is null or note not like 'superseded%%') order by ts, id",
                span,
            ).fetchall()
            if not predictions:
                found.append((correction, pd.DataFrame(), []))
                continue
            query = sql.SQL(
                "copy (select * from {} where equipment_id = %s and ts >= %s and ts < %s "
                "order by ts) to stdout with (format csv, header)"
            ).format(table)
            buffer = io.BytesIO()
            with (
                conn.cursor() as cur,
                cur.copy(query, (span[0], span[1], span[2] + window)) as copy,
            ):
                for chunk in copy:
                    buffer.write(chunk)
            buffer.seek(0)
            rows = pd.read_csv(buffer, low_memory=False) if buffer.getbuffer().nbytes else None
            if rows is None or rows.empty:
                found.append((correction, pd.DataFrame(), []))
                continue
            rows["ts"] = pd.to_datetime(rows["ts"], utc=True, format="ISO8601")
            # A prediction was made from its slot's row as it stood then: the slot's row now
            # is the first at or after the prediction's time.
            made = pd.DataFrame(predictions, columns=["id", "ts"])
            made["ts"] = pd.to_datetime(made["ts"], utc=True)
            matched = pd.merge_asof(
                made.sort_values("ts"),
                rows[["ts"]].rename(columns={"ts": "row_ts"}),
                left_on="ts",
                right_on="row_ts",
                direction="forward",
            ).dropna(subset=["row_ts"])
            features = rows[rows["ts"].isin(set(matched["row_ts"]))]
            replaced = list(matched[["id", "ts", "row_ts"]].itertuples(index=False, name=None))
            found.append((correction, features, replaced))
    return found


def note_rescores(
    correction: Correction,
    replaced: list[tuple[int, datetime, datetime]],
    written: pd.DataFrame,
    settings: Settings,
) -> int:
    """Link each old prediction to the new one of its slot's row; how many were replaced."""
    new_by_ts = {
        pd.Timestamp(ts): int(i) for i, ts in zip(written["id"], written["ts"], strict=True)
    }
    when = f"{correction.accepted_at:%Y-%m-%d %H:%M} UTC"
    reading = f"{correction.equipment_id} at {correction.ts.isoformat()}"
    count = 0
    with connect(Role.SCORING, settings) as conn, conn.transaction():
        for old_id, ts, row_ts in replaced:
            new_id = new_by_ts.get(pd.Timestamp(row_ts))
            if new_id is None:
                continue
            conn.execute(
                "update ops.predictions set note = %s where id = %s and ts = %s",
                (
                    f"superseded by prediction {new_id}: the reading of {reading} was corrected "
                    f"(correction {correction.id}, accepted by {correction.accepted_by} on {when})",
                    old_id,
                    ts,
                ),
            )
            conn.execute(
                "update ops.predictions set note = %s where id = %s and ts = %s",
                (
                    f"rescored after correction {correction.id} of the reading of {reading}; "
                    f"replaces prediction {old_id}",
                    new_id,
                    row_ts,
                ),
            )
            count += 1
    return count


def mark_applied(
    corrections: list[Correction], rescored: dict[int, int], note: str | None, settings: Settings
) -> None:
    with connect(Role.INGEST, settings) as conn, conn.transaction():
        for correction in corrections:
            conn.execute(
                "update ops.reading_corrections set applied_at = now(), rescored = %s, "
                "apply_note = %s where id = %s",
                (rescored.get(correction.id, 0), note, correction.id),
            )


def apply_corrections(
    settings: Settings | None = None,
    *,
    build: Callable[[], Any],
    score: Callable[[pd.DataFrame], pd.DataFrame],
) -> CorrectionsReport:
    """Apply the corrections waiting: reopen their windows, `build()` the features, `score()`
    each window's rebuilt feature rows (returns the written predictions with their ids)."""
    settings = settings or get_settings()
    corrections = pending_corrections(settings)
    report = CorrectionsReport()
    if not corrections:
        return report
    reopen_windows(corrections, settings)
    build()
    rescored: dict[int, int] = {}
    for correction, features, replaced in features_to_rescore(corrections, settings):
        if features.empty:
            continue
        try:
            written = score(features)
        except Exception as exc:  # no champion yet, registry down: the features are rebuilt
            report.note = (
                f"features rebuilt; predictions not rescored ({type(exc).__name__}: {exc})"
            )
            break
        rescored[correction.id] = note_rescores(correction, replaced, written, settings)
    mark_applied(corrections, rescored, report.note, settings)
    report.applied = [c.id for c in corrections]
    report.rescored = sum(rescored.values())
    return report
