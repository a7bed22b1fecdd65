"""The endpoints that act or compute: the dashboard's writes (emps.actions: the audited
`ops.user_*` functions, called with the user's own token), the what-if prediction, and reports.

    POST /api/v1/alerts/{alert_id}/acknowledge    Technician, Admin
    POST /api/v1/maintenance/schedule             Technician, Admin
    POST /api/v1/predictions/predict              any role; nothing is stored
    POST /api/v1/reports/generate                 any role; the Reports page's PDF or CSV
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from emps import actions
from emps.api.people import (
    ACT_RESPONSES,
    AUTH_RESPONSES,
    NOT_FOUND,
    acting_user,
    current_user,
    plain,
)
from emps.api.people import settings_of as _settings
from emps.api.service import ApiError
from emps.users import User

router = APIRouter(prefix="/api/v1")
Reader = Annotated[User, Depends(current_user)]
Actor = Annotated[User, Depends(acting_user)]
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
        **NOT_FOUND,
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
                {"all": True, "limit": 500, "offset": 0},
            ]
        },
    )
    equipment_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        None,
        min_length=1,
        description="The equipment to score (at most EMPS_API_PREDICT_MAX, 500 by default); "
        "answers keep this order, a repeated id is answered once",
    )
    all: bool = Field(
        False, description="Score every registered equipment instead, a page at a time"
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="With `all`: equipment per page (default and most: EMPS_API_PREDICT_MAX)",
    )
    offset: int = Field(0, ge=0, description="With `all`: equipment skipped (`next_offset`)")
    overrides: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="What if: feature values replacing each equipment's latest ones, as the "
        "dashboard's What if panel (names are the model's features)",
    )


PREDICT_DESCRIPTION = """\
Scores the equipment named in `equipment_ids`, or with `"all": true` every registered
equipment a page at a time in id order (`limit`, `offset`; the answer's `next_offset` is the
next page's, null on the last), in one read of their latest feature rows and one model call.
Nothing is stored. Each prediction is what the dashboard's What if panel shows for it.

An equipment that cannot be scored does not fail the others: it is listed in `not_scored` with
its reason (`not_registered`, or `no_features`: registered but no readings built into features
yet), and the answer is 200 as long as one equipment was scored (or `all` was asked). When none
of the named equipment can be scored the answer is 404 if none is registered, else 409, with
`not_scored` in the body. A bad override (not a feature of the model) refuses the whole
request (422): it would be wrong for every equipment.
"""


@router.post(
    "/predictions/predict",
    summary="Predict now for many equipment (or all) from their latest features, 'what if'",
    description=PREDICT_DESCRIPTION,
    responses={
        **AUTH_RESPONSES,
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "predictions": [
                            {
                                "equipment_id": "GEN-0001",
                                "ts": "2026-12-06T10:00:00+00:00",
                                "failure_probability": 0.91,
                                "severity": "CRITICAL",
                                "health_score": 9,
                                "model_version": "3",
                                "explanation": [
                                    {"feature": "vibration_now", "label": "vibration level now"}
                                ],
                                "what_if": {"vibration_now": 4.5},
                            }
                        ],
                        "not_scored": [
                            {
                                "equipment_id": "GEN-9",
                                "reason": "not_registered",
                                "detail": "equipment GEN-9 is not registered",
                            }
                        ],
                        "model_version": "3",
                        "next_offset": None,
                    }
                }
            }
        },
        404: {
            "content": {
                "application/json": {
                    "example": {
                        "detail": "none of the equipment could be scored: GEN-9 is not registered",
                        "not_scored": [{"equipment_id": "GEN-9", "reason": "not_registered"}],
                    }
                }
            }
        },
        409: {"description": "No champion model, or none of the equipment has features yet"},
        422: {"description": "A bad body, too many ids, or an override that is not a feature"},
    },
)
async def predict(body: PredictRequest, request: Request, _user: Reader) -> dict[str, Any]:
    # The model's code (pandas, scikit-learn) loads at the first prediction, not with the API.
    from emps.ml.predict import NoChampion, RegistryUnavailable, predict_many

    settings = _settings(request)
    most = settings.api.predict_max
    if body.all == (body.equipment_ids is not None):
        raise ApiError(422, "body field 'equipment_ids': give equipment ids, or `\"all\": true`")
    if body.equipment_ids is not None and len(body.equipment_ids) > most:
        raise ApiError(
            422,
            f"body field 'equipment_ids': {len(body.equipment_ids):,} ids; at most {most:,} per "
            'request (or `"all": true`, a page at a time)',
        )
    if not body.all and (body.limit is not None or body.offset):
        raise ApiError(422, "body field 'limit': `limit` and `offset` page `\"all\": true` only")
    try:
        if body.equipment_ids is not None and not body.overrides:
            # Made together with the other requests of the moment (emps.api.batching).
            batch = await request.app.state.service.predictor.predict(body.equipment_ids)
        else:
            batch = await asyncio.to_thread(
                predict_many,
                body.equipment_ids,
                body.overrides,
                settings,
                limit=min(body.limit or most, most) if body.all else None,
                offset=body.offset,
            )
    except NoChampion as exc:
        raise ApiError(409, str(exc)) from None
    except RegistryUnavailable as exc:
        raise ApiError(503, str(exc), {"Retry-After": "30"}) from None
    except ValueError as exc:  # an override that is not a feature of the model
        raise ApiError(422, f"body field 'overrides': {exc}") from None
    not_scored = batch.not_scored()
    if not batch.predictions and not body.all:
        status = 409 if batch.no_features else 404
        reasons = "; ".join(item["detail"] for item in not_scored[:10])
        raise ApiError(
            status,
            f"none of the equipment could be scored: {reasons}",
            extra={"not_scored": not_scored},
        )
    return {
        "predictions": batch.predictions,
        "not_scored": not_scored,
        "model_version": batch.model_version,
        "next_offset": batch.next_offset,
    }


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
        **NOT_FOUND,
    },
)
def generate_report(body: ReportRequest, request: Request, _user: Reader) -> Response:
    # The reports (pandas, matplotlib) load at the first report, not with the API.
    from emps.reports import ReportError, build_report

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
