"""The read endpoints: what the dashboard shows, for any signed-in role, through the dashboard's
own queries (emps.queries, read-only role).

    GET /api/v1/sensors/{equipment_id}/latest          newest readings of an equipment
    GET /api/v1/predictions/{equipment_id}/latest      its latest prediction (+ history)
    GET /api/v1/alerts                                 alerts, filtered and paged
    GET /api/v1/dashboard/overview                     the Fleet overview's figures and table
    GET /api/v1/dashboard/equipment/{id}/details       the Equipment page
    GET /api/v1/analytics/alert-statistics             the Analytics page's alert figures
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from emps.api.people import (
    AUTH_RESPONSES,
    MAX_PAGE,
    NOT_FOUND,
    current_user,
    page,
    plain,
    records,
)
from emps.api.people import settings_of as _settings
from emps.api.service import ApiError
from emps.domain import UNSCORED, Severity
from emps.settings import Settings
from emps.users import User


def _queries():
    """The dashboard's queries, loaded at the first read rather than with the API: they bring
    pandas (~80 MB), which an API that devices only send readings to never needs."""
    from emps import queries

    return queries


router = APIRouter(prefix="/api/v1", responses=AUTH_RESPONSES)
Reader = Annotated[User, Depends(current_user)]
AlertStatus = Literal["open", "acknowledged", "resolved"]


def _example(value: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {"application/json": {"example": value}}}}


def registered(equipment_id: str, settings: Settings) -> dict[str, Any]:
    """The equipment's row of the fleet view (analytics.mart_equipment_health), or 404."""
    health = _queries().equipment_health(equipment_id, settings)
    if health is None:
        raise ApiError(404, f"equipment {equipment_id[:100]} is not registered")
    return health


def _range(
    since: datetime | None, until: datetime | None, days: float
) -> tuple[datetime, datetime]:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=days)
    for name, value in (("since", start), ("until", end)):
        if value.tzinfo is None:
            raise ApiError(422, f"query field {name!r}: give a time zone (e.g. ...T10:00:00Z)")
    if start >= end:
        raise ApiError(422, "query field 'since': must be before 'until'")
    return start, end


@router.get(
    "/sensors/{equipment_id}/latest",
    summary="The newest readings of an equipment, every catalog channel",
    responses={
        **NOT_FOUND,
        **_example(
            {
                "equipment_id": "GEN-0001",
                "readings": [
                    {
                        "ts": "2026-12-06T10:00:00.000Z",
                        "temperature": 71.5,
                        "vibration": 3.2,
                        "ingested_at": "2026-12-06T10:00:41.000Z",
                    }
                ],
            }
        ),
    },
)
def sensors_latest(
    equipment_id: str,
    request: Request,
    _user: Reader,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="How many readings")] = 1,
) -> dict[str, Any]:
    settings = _settings(request)
    registered(equipment_id, settings)
    rows = _queries().latest_readings(equipment_id, limit, settings)
    return {"equipment_id": equipment_id, "readings": records(rows)}


@router.get(
    "/predictions/{equipment_id}/latest",
    summary="The latest prediction of an equipment, and its history on request",
    responses={
        **NOT_FOUND,
        **_example(
            {
                "equipment_id": "GEN-0001",
                "prediction": {
                    "prediction_id": 812,
                    "ts": "2026-12-06T10:00:00.000Z",
                    "failure_probability": 0.91,
                    "health_score": 9,
                    "severity": "CRITICAL",
                    "days_until_failure": 1.4,
                    "model_version": "3",
                    "explanation": [{"sensor": "vibration", "contribution": 0.21}],
                },
                "history": [
                    {
                        "ts": "2026-12-06T09:00:00.000Z",
                        "failure_probability": 0.88,
                        "predictions": 60,
                    }
                ],
            }
        ),
    },
)
def predictions_latest(
    equipment_id: str,
    request: Request,
    _user: Reader,
    history_days: Annotated[
        float, Query(ge=0, le=366, description="Also the probability over this many days (0: none)")
    ] = 0,
) -> dict[str, Any]:
    settings = _settings(request)
    registered(equipment_id, settings)
    latest = _queries().latest_prediction(equipment_id, settings)
    body: dict[str, Any] = {
        "equipment_id": equipment_id,
        "prediction": plain(latest) if latest else None,
    }
    if history_days:
        end = datetime.now(UTC)
        history = _queries().prediction_history(
            equipment_id, end - timedelta(days=history_days), end, settings
        )
        body["history"] = records(history)
    return body


@router.get(
    "/alerts",
    summary="Alerts, newest first: filter by status, severity, site, equipment and time; paged",
    responses=_example(
        {
            "items": [
                {
                    "alert_id": 41,
                    "equipment_id": "GEN-0001",
                    "site": "ALPHA",
                    "severity": "CRITICAL",
                    "status": "open",
                    "message": "CRITICAL failure risk on GEN-0001",
                    "created_at": "2026-12-06T08:00:00.000Z",
                }
            ],
            "limit": 100,
            "offset": 0,
            "next_offset": None,
        }
    ),
)
def list_alerts(
    request: Request,
    _user: Reader,
    status: Annotated[list[AlertStatus] | None, Query(description="Repeat for several")] = None,
    severity: Annotated[list[Severity] | None, Query()] = None,
    site: Annotated[list[str] | None, Query()] = None,
    equipment_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, f"query field {name!r}: give a time zone (e.g. ...T10:00:00Z)")
    rows = _queries().alerts(
        statuses=status,
        severities=severity,
        sites=site,
        since=since,
        until=until,
        equipment_id=equipment_id,
        limit=limit + 1,
        offset=offset,
        settings=_settings(request),
    )
    return page(rows, limit, offset)


@router.get(
    "/dashboard/overview",
    summary="The Fleet overview: counts by severity, active alerts, the most at risk (paged)",
    responses=_example(
        {
            "equipment": 5,
            "by_severity": {"CRITICAL": 1, "HIGH": 1, "MEDIUM": 1, "LOW": 1, "UNSCORED": 1},
            "silent": 1,
            "mean_health_score": 48.5,
            "activity": {"alerts_critical": 1, "alerts_unacknowledged": 1},
            "fleet": {"items": [{"equipment_id": "GEN-0001", "severity": "CRITICAL"}]},
        }
    ),
)
async def overview(
    request: Request,
    _user: Reader,
    site: Annotated[list[str] | None, Query()] = None,
    equipment_type: Annotated[list[str] | None, Query()] = None,
    severity: Annotated[list[Severity | Literal["UNSCORED"]] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows of the fleet table")] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    settings = _settings(request)
    asked = (site, equipment_type, severity, limit, offset)
    key = ("overview", *(tuple(a) if isinstance(a, list) else a for a in asked))
    # The same overview asked while one is being read shares that read (emps.api.batching).
    return await request.app.state.shared_reads.read(key, lambda: _overview(settings, *asked))


def _overview(settings: Settings, site, equipment_type, severity, limit, offset) -> dict[str, Any]:
    limits = _queries().thresholds(settings)
    summary = _queries().fleet_summary(site, equipment_type, severity, settings)
    fleet = _queries().fleet_health(
        site, equipment_type, severity, settings, limit=limit + 1, offset=offset
    )
    scored = summary[summary["severity"] != UNSCORED]
    scored_count = int(scored["equipment"].sum())
    return {
        "equipment": int(summary["equipment"].sum()),
        "by_severity": {
            k: int(v) for k, v in summary.groupby("severity")["equipment"].sum().items()
        },
        "by_assessment": {
            k: int(v) for k, v in summary.groupby("assessment")["equipment"].sum().items()
        },
        "silent": int(summary.loc[summary["silent"].astype(bool), "equipment"].sum()),
        "silent_minutes": limits["silent_minutes"],
        "mean_health_score": (
            round(float(scored["health_sum"].sum()) / scored_count, 1) if scored_count else None
        ),
        "activity": _queries().activity_summary(settings),
        "predictions_as_of": _iso(summary["prediction_as_of"].max()),
        "last_readings_as_of": _iso(summary["last_reading_as_of"].max()),
        "fleet": page(fleet, limit, offset),
    }


def _iso(value: Any) -> str | None:
    if value is None or value != value:  # None, NaT
        return None
    return value.isoformat()


@router.get(
    "/dashboard/equipment/{equipment_id}/details",
    summary="The Equipment page: health, normal bands, trends, alerts and maintenance",
    responses={
        **NOT_FOUND,
        **_example(
            {
                "equipment_id": "GEN-0001",
                "health": {"severity": "CRITICAL", "health_score": 9, "site": "ALPHA"},
                "channels": [{"sensor": "temperature", "unit": "°C", "normal_low": 60}],
                "sensor_trend": [{"ts": "2026-12-06T09:00:00.000Z", "temperature": 71.2}],
                "prediction_history": [{"ts": "2026-12-06T09:00:00.000Z"}],
                "alerts": [{"alert_id": 41, "status": "open"}],
                "maintenance": [{"task_id": 7, "task_type": "inspection"}],
            }
        ),
    },
)
def equipment_details(
    equipment_id: str,
    request: Request,
    _user: Reader,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    settings = _settings(request)
    health = registered(equipment_id, settings)
    start, end = _range(since, until, days=7)
    return {
        "equipment_id": equipment_id,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "health": plain(health),
        "channels": records(_queries().envelopes(health["equipment_type"], settings)),
        "sensor_trend": records(_queries().sensor_trend(equipment_id, start, end, settings)),
        "prediction_history": records(
            _queries().prediction_history(equipment_id, start, end, settings)
        ),
        "alerts": records(
            _queries().alerts(equipment_id=equipment_id, limit=50, settings=settings)
        ),
        "maintenance": records(_queries().maintenance_history(equipment_id, settings)),
    }


@router.get(
    "/analytics/alert-statistics",
    summary="Alerts per day, severity and status, with mean minutes to acknowledge and resolve",
    responses=_example(
        {
            "since": "2026-11-06T00:00:00+00:00",
            "until": "2026-12-06T00:00:00+00:00",
            "totals": {"alerts": 3, "by_severity": {"CRITICAL": 1}, "by_status": {"open": 1}},
            "days": [
                {
                    "day": "2026-12-06",
                    "severity": "CRITICAL",
                    "status": "open",
                    "alert_count": 1,
                    "mean_minutes_to_acknowledge": None,
                }
            ],
            "failures": [{"equipment_id": "PMP-0001", "caught": True, "warning_hours": 23.5}],
        }
    ),
)
def alert_statistics(
    request: Request,
    _user: Reader,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    settings = _settings(request)
    start, end = _range(since, until, days=30)
    days = _queries().alert_statistics(start, end, settings)
    counts = days["alert_count"].astype(int) if not days.empty else days.get("alert_count")
    return {
        "since": start.isoformat(),
        "until": end.isoformat(),
        "totals": {
            "alerts": int(counts.sum()) if counts is not None else 0,
            "by_severity": _sums(days, "severity"),
            "by_status": _sums(days, "status"),
        },
        "days": records(days),
        "failures": records(_queries().failures_caught(start, end, settings)),
    }


def _sums(days, column: str) -> dict[str, int]:
    if days.empty:
        return {}
    return {k: int(v) for k, v in days.groupby(column)["alert_count"].sum().items()}
