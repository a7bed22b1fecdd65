"""The endpoints that act or compute: the dashboard's writes (emps.actions: the audited
`ops.user_*` functions, called with the user's own token), the what-if prediction, and reports.

    POST /api/v1/alerts/{alert_id}/acknowledge    Technician, Admin
    POST /api/v1/maintenance/schedule             Technician, Admin
    POST /api/v1/predictions/predict              any role; nothing is stored
    POST /api/v1/reports/generate                 any role; the Reports page's PDF or CSV
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from emps import actions
from emps.api.app import ApiError
from emps.api.people import ACT_RESPONSES, AUTH_RESPONSES, acting_user, current_user, plain
from emps.api.people import settings_of as _settings
from emps.api.routes_fleet import registered
from emps.reports import ReportError, build_report
from emps.users import User

router = APIRouter(prefix="/api/v1")
Reader = Annotated[User, Depends(current_user)]
Actor = Annotated[User, Depends(acting_user)]
MAX_PREDICT = 500
Note = Annotated[str | None, Field(max_length=actions.MAX_NOTE_LENGTH)]


def _refused(exc: actions.ActionFailed | actions.NotAllowed) -> ApiError:
    if isinstance(exc, actions.NotAllowed):
        return ApiError(403, str(exc))
    if isinstance(exc, actions.NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, actions.SessionRefused):
        return ApiError(403, str(exc))
    return ApiError(409, str(exc))


class Acknowledgement(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"note": "crew on the way"}]}
    )
    note: Note = None


@router.post(
    "/alerts/{alert_id}/acknowledge",
    summary="Acknowledge an open alert (audited as the token's user)",
    responses={
        **ACT_RESPONSES,
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "id": 41,
                        "status": "acknowledged",
                        "acknowledged_by": "tech",
                        "acknowledged_at": "2026-12-06T10:02:00.000Z",
                    }
                }
            }
        },
        404: {"content": {"application/json": {"example": {"detail": "alert 99 does not exist"}}}},
        409: {
            "content": {
                "application/json": {
                    "example": {
                        "detail": "alert 41 is already acknowledged; only an open alert can be "
                        "acknowledged"
                    }
                }
            }
        },
    },
)
def acknowledge(
    alert_id: int, request: Request, user: Actor, body: Acknowledgement | None = None
) -> dict[str, Any]:
    try:
        row = actions.acknowledge_alert(
            user, alert_id, body.note if body else None, _settings(request)
        )
    except (actions.ActionFailed, actions.NotAllowed) as exc:
        raise _refused(exc) from None
    return plain(row)


class TaskRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "equipment_id": "GEN-0001",
                    "task_type": "inspection",
                    "priority": 1,
                    "scheduled_date": "2026-12-07T08:00:00Z",
                    "alert_id": 41,
                    "notes": "check the bearing",
                }
            ]
        },
    )
    equipment_id: str = Field(min_length=1, max_length=200)
    task_type: Literal["inspection", "corrective", "preventive", "repair"]
    priority: int = Field(3, ge=1, le=5, description="1 most urgent, 5 least")
    scheduled_date: datetime = Field(description="ISO 8601 with a time zone")
    alert_id: int | None = None
    notes: Note = None


@router.post(
    "/maintenance/schedule",
    status_code=201,
    summary="Schedule a maintenance task (audited as the token's user)",
    responses={
        **ACT_RESPONSES,
        201: {
            "content": {
                "application/json": {
                    "example": {
                        "id": 7,
                        "equipment_id": "GEN-0001",
                        "task_type": "inspection",
                        "priority": 1,
                        "status": "scheduled",
                        "scheduled_date": "2026-12-07T08:00:00.000Z",
                        "created_by": "tech",
                    }
                }
            }
        },
        404: {
            "content": {
                "application/json": {"example": {"detail": "equipment GEN-9 is not registered"}}
            }
        },
    },
)
def schedule(task: TaskRequest, request: Request, user: Actor) -> dict[str, Any]:
    if task.scheduled_date.tzinfo is None:
        raise ApiError(422, "body field 'scheduled_date': give a time zone (e.g. ...T08:00:00Z)")
    try:
        row = actions.create_task(
            user,
            task.equipment_id,
            task.task_type,
            task.priority,
            task.scheduled_date,
            task.alert_id,
            task.notes,
            _settings(request),
        )
    except (actions.ActionFailed, actions.NotAllowed) as exc:
        raise _refused(exc) from None
    return plain(row)


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"equipment_ids": ["GEN-0001", "GEN-0002"]},
                {"equipment_ids": ["GEN-0001"], "overrides": {"vibration_now": 4.5}},
            ]
        },
    )
    equipment_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        min_length=1, max_length=MAX_PREDICT
    )
    overrides: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="What if: feature values replacing each equipment's latest ones, as the "
        "dashboard's What if panel (names are the model's features)",
    )


@router.post(
    "/predictions/predict",
    summary="Predict now for many equipment from their latest features, optionally 'what if'",
    responses={
        **AUTH_RESPONSES,
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "predictions": [
                            {
                                "equipment_id": "GEN-0001",
                                "failure_probability": 0.91,
                                "severity": "CRITICAL",
                                "health_score": 9,
                                "model_version": "3",
                                "what_if": {"vibration_now": 4.5},
                            }
                        ]
                    }
                }
            }
        },
        404: {
            "content": {
                "application/json": {"example": {"detail": "equipment GEN-9 is not registered"}}
            }
        },
        409: {"description": "No champion model, or an equipment without features yet"},
    },
)
def predict(body: PredictRequest, request: Request, _user: Reader) -> dict[str, Any]:
    from ml.predict import NoChampion, RegistryUnavailable, predict_equipment

    settings = _settings(request)
    ids = list(dict.fromkeys(body.equipment_ids))
    for equipment_id in ids:
        registered(equipment_id, settings)
    results = []
    for equipment_id in ids:
        try:
            results.append(predict_equipment(equipment_id, body.overrides, settings))
        except (NoChampion, LookupError) as exc:
            raise ApiError(409, str(exc)) from None
        except RegistryUnavailable as exc:
            raise ApiError(503, str(exc), {"Retry-After": "30"}) from None
        except ValueError as exc:  # an override that is not a feature of the model
            raise ApiError(422, f"body field 'overrides': {exc}") from None
    return {"predictions": results}


class ReportRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "scope": "site:ALPHA",
                    "since": "2026-11-29T00:00:00Z",
                    "until": "2026-12-06T00:00:00Z",
                    "format": "pdf",
                }
            ]
        },
    )
    scope: str = Field(
        "fleet",
        max_length=300,
        description="'fleet', 'site:<site>' or 'equipment:<equipment id>'",
    )
    since: datetime | None = Field(None, description="Default: 7 days before `until`")
    until: datetime | None = Field(None, description="Default: now")
    format: Literal["pdf", "csv"] = "pdf"


@router.post(
    "/reports/generate",
    summary="The Reports page's PDF or CSV for the fleet, a site or an equipment",
    responses={
        **AUTH_RESPONSES,
        200: {
            "content": {
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "text/csv": {"example": "equipment_id,equipment_type,site,health_score,...\n"},
            }
        },
        404: {
            "content": {
                "application/json": {"example": {"detail": "equipment GEN-9 is not registered"}}
            }
        },
    },
)
def generate_report(body: ReportRequest, request: Request, _user: Reader) -> Response:
    until = body.until or datetime.now(UTC)
    since = body.since or until - timedelta(days=7)
    try:
        report = build_report(body.scope, since, until, _settings(request))
    except ReportError as exc:
        message = str(exc)
        if "not registered" in message or "no registered equipment" in message:
            raise ApiError(404, message) from None
        field = "scope" if "scope" in message else "since"
        raise ApiError(422, f"body field {field!r}: {message}") from None
    if body.format == "csv":
        content, media = report.csv_bytes(), "text/csv"
    else:
        content, media = report.pdf_bytes(), "application/pdf"
    return Response(
        content,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{report.filename(body.format)}"'},
    )
