"""Prediction events: one per change of severity, not one per scoring run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from emps.db import Role, connect
from emps.ml.predict import severity_changes


def _store(settings, rows: list[tuple[str, datetime, str]]) -> pd.DataFrame:
    stored = []
    with connect(Role.SCORING, settings) as conn:
        for equipment, ts, severity in rows:
            row_id = conn.execute(
                "insert into ops.predictions (equipment_id, ts, failure_probability, "
                "health_score, severity, model_version) values (%s, %s, 0.9, 10, %s, '1') "
                "returning id",
                (equipment, ts, severity),
            ).fetchone()[0]
            stored.append({"id": row_id, "equipment_id": equipment, "severity": severity})
    return pd.DataFrame(stored)


def test_only_new_or_changed_high_and_critical_predictions_raise_events(db):
    """An equipment that stays CRITICAL raises no new event; one that turns CRITICAL does."""
    now = datetime.now(UTC)
    _store(db, [("GEN-1", now - timedelta(minutes=1), "CRITICAL")])
    _store(db, [("GEN-2", now - timedelta(minutes=1), "HIGH")])
    written = _store(
        db,
        [
            ("GEN-1", now, "CRITICAL"),  # unchanged: no event
            ("GEN-2", now, "CRITICAL"),  # escalated: event
            ("GEN-3", now, "HIGH"),  # first prediction: event
            ("GEN-4", now, "LOW"),  # never an event
        ],
    )
    assert sorted(severity_changes(written, db)["equipment_id"]) == ["GEN-2", "GEN-3"]
