"""Test data for the alert tests: equipment and predictions written as the platform writes them.

A module of its own, not conftest: `from conftest import ...` resolves to whichever conftest was
imported first, so it broke when the alert tests ran together with another folder's.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from emps.db import Role, connect
from emps.settings import Settings


def add_equipment(settings: Settings, equipment_id: str, site: str = "ALPHA") -> None:
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site)"
            " values (%s, 'generator', %s) on conflict do nothing",
            (equipment_id, site),
        )


def write_prediction(
    settings: Settings,
    equipment_id: str,
    probability: float,
    severity: str,
    ts: datetime | None = None,
    days: float | None = 3.0,
    assessment: str = "ok",
) -> dict:
    """Insert an ops.predictions row as the scoring flow does; returns the event payload."""
    ts = ts or datetime.now(UTC)
    explanation = [
        {
            "feature": "vibration_slope_w3",
            "label": "vibration trend over 24 h",
            "sensor": "vibration",
            "contribution": 0.21,
            "value": 1.3,
        }
    ]
    with connect(Role.SCORING, settings) as conn:
        pid = conn.execute(
            "insert into ops.predictions (equipment_id, ts, failure_probability, health_score,"
            " severity, days_until_failure, model_version, explanation, assessment)"
            " values (%s, %s, %s, %s, %s, %s, '3', %s, %s) returning id",
            (
                equipment_id,
                ts,
                probability,
                round(100 * (1 - probability)),
                severity,
                days,
                json.dumps(explanation),
                assessment,
            ),
        ).fetchone()[0]
    return {
        "prediction_id": pid,
        "prediction_ts": ts.isoformat(),
        "equipment_id": equipment_id,
        "failure_probability": probability,
        "severity": severity,
        "days_until_failure": days,
        "model_version": "3",
    }
