"""What the people-and-systems endpoints share: who holds the bearer token, what their role may
do, refusals that name the field, and table rows as JSON.

People and scripts authenticate with the dashboard's own tokens: a session token, or an API
token from `emps user token` (`Authorization: Bearer emps_...`). The database says who holds it
(ops.token_user: revoked, expired or idle tokens and deactivated users are refused), and the
role decides, as on the dashboard: any role reads; Technicians and Admins act.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from emps.api.service import ApiError, Service
from emps.settings import Settings
from emps.users import User, session_user

if TYPE_CHECKING:
    import pandas as pd

TOKEN_HELP = (
    "send `Authorization: Bearer <token>` with a token from `emps user token <user>` "
    "(device keys only send readings)"
)
MAX_PAGE = 500
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No token, or a token that is unknown, expired or revoked",
        "content": {"application/json": {"example": {"detail": "a user token is required: ..."}}},
    },
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "The equipment is not registered",
        "content": {
            "application/json": {"example": {"detail": "equipment GEN-9 is not registered"}}
        },
    }
}
ACT_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    403: {
        "description": "The token's user is a Viewer",
        "content": {
            "application/json": {
                "example": {
                    "detail": "viewer is a Viewer: only Technicians and Admins can change "
                    "alerts and maintenance tasks"
                }
            }
        },
    },
}


class Sessions:
    """Who holds a token, asked of the database and kept `ttl` seconds (0: asked every time)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ttl = settings.api.key_cache_s
        self.known: dict[bytes, tuple[User | None, float]] = {}
        self.lock = threading.Lock()

    def user(self, token: str) -> User | None:
        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        with self.lock:
            cached = self.known.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        user = session_user(token, self.settings)
        if self.ttl > 0:
            with self.lock:
                if len(self.known) > 10_000:
                    self.known.clear()
                self.known[digest] = (user, now + self.ttl)
        return user


def current_user(request: Request) -> User:
    """The signed-in user behind the request's bearer token; 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, f"a user token is required: {TOKEN_HELP}", {"WWW-Authenticate": "Bearer"}
        )
    sessions: Sessions = request.app.state.sessions
    try:
        user = sessions.user(token)
    except Exception as exc:  # the database is down: the same answer as the device routes
        raise ApiError(
            503, "the database is unavailable; retry shortly", {"Retry-After": "5"}
        ) from exc
    if user is None:
        raise ApiError(
            401,
            "the token is not valid: it is unknown, expired, revoked, or its user is "
            f"deactivated; {TOKEN_HELP}",
            {"WWW-Authenticate": "Bearer"},
        )
    if user.must_change_password:
        raise ApiError(
            403, f"user {user.username} must choose a new password on the dashboard first"
        )
    request.state.user = user.username
    return user


def acting_user(request: Request) -> User:
    """A user whose role may change alerts and tasks (Technician, Admin); 403 for a Viewer."""
    user = current_user(request)
    if not user.role.can_act:
        raise ApiError(
            403,
            f"{user.username} is a {user.role.value}: only Technicians and Admins can change "
            "alerts and maintenance tasks",
        )
    return user


def service_of(request: Request) -> Service:
    return request.app.state.service


def settings_of(request: Request) -> Settings:
    return request.app.state.service.settings


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Table rows as JSON objects: times in ISO 8601 UTC, missing values as null."""
    if frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso", default_handler=str))


def plain(values: dict[str, Any]) -> dict[str, Any]:
    """One row (a dict) as a JSON object, as `records` writes rows."""
    import pandas as pd  # loaded by the read that made the row already

    return records(pd.DataFrame([values]))[0]


def page(frame: pd.DataFrame, limit: int, offset: int) -> dict[str, Any]:
    """A page of a list read with `limit + 1` rows: the rows, and the next page's offset."""
    more = len(frame) > limit
    return {
        "items": records(frame.iloc[:limit]),
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if more else None,
    }


def _field(loc: tuple | list) -> str:
    # List positions left out: `severity=SEVERE` is about field 'severity', not 'severity.0'.
    parts = [str(p) for p in loc[1:] if not isinstance(p, int)]
    return ".".join(parts) or str(loc[-1] if loc else "body")


def install(app: FastAPI, service: Service) -> None:
    """The shared state and the 422 answer that names the field."""
    app.state.sessions = Sessions(service.settings)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": _field(error.get("loc", ())),
                "in": str(error.get("loc", ("body",))[0]),
                "message": error.get("msg", "is not valid"),
            }
            for error in exc.errors()
        ]
        first = errors[0] if errors else {"field": "body", "in": "body", "message": "not valid"}
        return JSONResponse(
            {
                "detail": f"{first['in']} field {first['field']!r}: {first['message']}",
                "errors": errors,
            },
            status_code=422,
        )
