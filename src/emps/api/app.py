"""The HTTP API: device ingest with per-device keys, and the dashboard's reads and actions
for people and systems (routes_fleet.py, routes_actions.py).

    POST /api/v1/sensors/ingest        readings in (JSON object, array, or NDJSON); 202 + an id
    GET  /api/v1/sensors/ingest/{id}   what became of them (accepted, loaded, partial, ...)
    GET  /health                       no key needed
    GET  /metrics                      Prometheus: requests, latency and errors per route

Devices authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` (keys from
`emps devices add`); for ingest the API logs in as emps_api, which reaches the database through
its security-definer functions only (migration 0150). People and scripts send a user token
(`emps user token`): their reads run as the dashboard's read-only role, their actions through
the dashboard's audited functions with their own token (emps.api.people).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from psycopg.types.json import Jsonb

from emps.api import people, routes_actions, routes_fleet
from emps.api.batching import SharedReads
from emps.api.drops import Overloaded, Placement
from emps.api.ledger import Accepted
from emps.api.readings import BadBody, check_readings, ndjson_lines
from emps.api.readings import parse_body as read_items
from emps.api.service import ApiError, Device, Service
from emps.logs import correlation_id
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.api")
INGEST_ROUTE = "/api/v1/sensors/ingest"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit:,} bytes; send smaller batches")
        chunks.append(chunk)
    return b"".join(chunks)


# -- ingest ---------------------------------------------------------------------------------


async def ingest(service: Service, request: Request) -> JSONResponse:
    settings = service.settings
    device = await service.device_for(request)
    wait = service.buckets.take(device.key_id)
    if wait:
        raise ApiError(
            429,
            f"more than {settings.api.rate_per_key:g} requests a second with this key; "
            "slow down or batch readings",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(
            422, "Idempotency-Key must be 1-200 printable ASCII characters without spaces"
        )
    body = await _read_body(request, settings.api.max_body_bytes)
    try:
        items = read_items(body, request.headers.get("content-type", "application/json"))
    except BadBody as exc:
        raise ApiError(422, exc.problems[0].message, errors=exc.problems) from None
    if len(items) > settings.api.max_readings:
        raise ApiError(
            413,
            f"the body holds {len(items):,} readings; at most {settings.api.max_readings:,} "
            "per request",
        )
    # Plain readings are checked here in well under a millisecond; any other shape is typed
    # the way ingest types it, with pandas, off the event loop.
    records, problems = check_readings(items, service.catalog, settings, slow=False)
    if problems is None:
        records, problems = await asyncio.to_thread(
            check_readings, items, service.catalog, settings
        )
    if problems:
        first = problems[0]
        where = f"row {first.row}" + (f", field {first.field!r}" if first.field else "")
        raise ApiError(
            422,
            f"{len(problems)} problem(s); nothing was accepted. First: {where}: {first.message}",
            errors=problems,
        )
    foreign = sorted({str(r["equipment_id"]) for r in records} - device.equipment_ids)
    if foreign:
        refused = [n for n, r in enumerate(records, start=1) if r["equipment_id"] in foreign]
        await service.call(
            "select ops.api_record_refusal(%s, %s, %s)",
            (
                device.device_id,
                "api.ingest.refused",
                Jsonb(
                    {
                        "reason": "equipment not bound to the device",
                        "equipment_ids": foreign[:50],
                        "rows": refused[:50],
                        "key_id": device.key_id,
                        "request_id": request.state.request_id,
                    }
                ),
            ),
        )
        log.warning(
            "device %s refused: readings for equipment it is not bound to (%s)",
            device.device_id,
            ", ".join(foreign[:10]),
        )
        raise ApiError(
            403,
            f"device {device.device_id} may not report equipment {', '.join(foreign[:10])}"
            f"{' and more' if len(foreign) > 10 else ''} (rows {', '.join(map(str, refused[:10]))}); "
            "nothing was accepted",
        )
    digest = hashlib.sha256(body).digest()
    if idempotency_key is None:
        request_id = uuid.uuid4()
        placement = await _write(service, device, records)
        await service.accepted.record(
            Accepted(request_id, device.device_id, digest, len(records), placement)
        )
        return _accepted(request_id, len(records))
    async with service.one_at_a_time(device.device_id, idempotency_key):
        rows = await service.call(
            "select request_id, state, body_sha256, created "
            "from ops.api_begin_request(%s, %s, %s, %s, %s)",
            (uuid.uuid4(), device.device_id, idempotency_key, digest, len(records)),
        )
        request_id, state, stored_digest, created = rows[0]
        if not created:
            if bytes(stored_digest) != digest:
                raise ApiError(
                    422,
                    "this Idempotency-Key was used before with a different body; use a new key "
                    "for new readings",
                )
            if state == "accepted":
                return _accepted(request_id, len(records), replayed=True)
            # Begun by a request that never got its answer (the API stopped): write it now.
        placement = await _write(service, device, records)
        await service.call(
            "select ops.api_accept_request(%s, %s, %s, %s)",
            (request_id, placement.file_name, placement.first_row, placement.last_row),
        )
    return _accepted(request_id, len(records))


async def _write(service: Service, device: Device, records: list[dict[str, Any]]) -> Placement:
    """The readings appended to the device's drop file and fsynced."""
    try:
        return await service.writer.append(device.device_id, ndjson_lines(records))
    except Overloaded:
        raise ApiError(
            429, "the API is writing too many readings; retry shortly", {"Retry-After": "1"}
        ) from None
    except OSError as exc:
        log.error("readings of %s not written: %s", device.device_id, exc)
        raise ApiError(
            503, "the readings could not be written to disk; retry later", {"Retry-After": "30"}
        ) from None


def _accepted(request_id: uuid.UUID, readings: int, replayed: bool = False) -> JSONResponse:
    headers = {"Location": f"{INGEST_ROUTE}/{request_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(
        {"id": str(request_id), "status": "accepted", "readings": readings},
        status_code=202,
        headers=headers,
    )


async def ingest_status(service: Service, request: Request, request_id: str) -> JSONResponse:
    device = await service.device_for(request)
    try:
        wanted = uuid.UUID(request_id)
    except ValueError:
        raise ApiError(404, f"no ingest request {request_id[:60]!r}") from None
    rows = await service.call(
        "select request_id, state, readings, file_name, created_at, file_status, file_error, "
        "rows_quarantined, rows_conflict, problems from ops.api_request_status(%s, %s)",
        (device.device_id, wanted),
    )
    if not rows or rows[0][1] != "accepted":
        raise ApiError(
            404,
            f"no ingest request {request_id} of device {device.device_id} (a request is kept "
            f"{service.settings.retention.ingest_ledger_days} days, as long as its drop file's "
            "outcome)",
        )
    return JSONResponse(status_body(*rows[0]))


def status_body(
    request_id,
    _state,
    readings,
    file_name,
    created_at,
    file_status,
    file_error,
    quarantined,
    conflicts,
    problems,
) -> dict[str, Any]:
    """What became of a request's readings, from its drop file's ledger row and its rows."""
    body: dict[str, Any] = {
        "id": str(request_id),
        "readings": readings,
        "accepted_at": created_at.isoformat(),
        "file": file_name,
    }
    if file_status in (None, "claimed"):
        status = "accepted"  # waiting for ingest, or being loaded
    elif file_status == "duplicate":
        status = "duplicate"
        body["reasons"] = [file_error or "the same readings were loaded before"]
    elif file_status in ("quarantined", "failed") and not quarantined:
        status = "quarantined"  # the whole file
        body["reasons"] = [file_error or "the drop file could not be ingested"]
    elif quarantined >= readings:
        status = "quarantined"
    elif quarantined:
        status = "partial"
    elif conflicts:
        status = "conflict"
    else:
        status = "loaded"
    body["status"] = status
    body["rows_quarantined"] = quarantined
    body["rows_conflict"] = conflicts
    if problems:
        body["problems"] = problems
    return body


# -- the application ------------------------------------------------------------------------


class Observed:
    """Every HTTP request: an id (the client's X-Request-ID when well-formed, else a new one)
    on the answer and in the log's correlation id, one JSON log line, and its route's count,
    latency and errors in the Prometheus metrics. A bug (an exception no handler answered)
    has its traceback logged under the request's id, and the client gets that id to quote
    rather than a bare 500. Plain ASGI: Starlette's `@app.middleware` wrapper costs a task
    group per request, a third of what a small request costs."""

    def __init__(self, app, metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        given = given.decode("latin-1")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state.update(request_id=request_id, device=None, user=None)
        token = correlation_id.set(request_id)
        started = time.perf_counter()
        answered: list[int] = []

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                answered.append(message["status"])
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            if answered:
                raise
            await JSONResponse(
                {
                    "detail": "internal error: the API's log has it under this request id",
                    "request_id": request_id,
                },
                status_code=500,
            )(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            status = answered[0] if answered else 500
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(path, scope["method"], status, elapsed)
            log.info(
                "%s %s %s",
                scope["method"],
                path,
                status,
                extra={
                    "event": "api.request",
                    "method": scope["method"],
                    "route": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "device": state.get("device"),
                    "user": state.get("user"),
                },
            )
            correlation_id.reset(token)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API as an ASGI application (uvicorn serves it: `emps api`)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from prometheus_client.registry import CollectorRegistry

    from emps.metrics import HttpMetrics

    settings = settings or get_settings()
    service = Service(settings)
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="EMPS API",
        version="1",
        description="Equipment Maintenance Prediction System: device ingest with device keys; "
        "fleet reads, alerts, maintenance, predictions and reports with a user token "
        "(`emps user token`). Any role reads; Technicians and Admins act.",
        lifespan=lifespan,
        # Our own Prometheus metrics and JSON logs observe every request (Observed); FastAPI's
        # OpenTelemetry hooks would only ask, per request, whether a provider was set up.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    app.state.shared_reads = SharedReads()
    people.install(app, service)
    app.include_router(routes_fleet.router)
    app.include_router(routes_actions.router)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    app.add_middleware(Observed, metrics=metrics)

    @app.get("/health", summary="Whether the API is up and reaches its database")
    async def health() -> JSONResponse:
        try:
            await service.call("select 1", ())
            database = "up"
        except ApiError:
            database = "down"
        return JSONResponse(
            {"status": "ok" if database == "up" else "degraded", "database": database},
            status_code=200 if database == "up" else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        INGEST_ROUTE,
        status_code=202,
        summary="Send readings: one JSON object, a JSON array, or NDJSON lines",
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {
                        "example": [
                            {
                                "equipment_id": "GEN-001",
                                "timestamp": "2026-12-06T10:00:00+00:00",
                                "temperature": 71.5,
                            }
                        ]
                    },
                    "application/x-ndjson": {"schema": {"type": "string"}},
                }
            }
        },
    )
    async def post_ingest(request: Request) -> JSONResponse:
        return await ingest(service, request)

    @app.get(INGEST_ROUTE + "/{request_id}", summary="What became of an ingest request")
    async def get_ingest(request_id: str, request: Request) -> JSONResponse:
        return await ingest_status(service, request, request_id)

    return app


def run(settings: Settings | None = None, port: int | None = None, host: str = "127.0.0.1") -> None:
    """Serve the API on `host` (this machine only by default) until stopped."""
    import uvicorn

    from emps.logs import configure_logging

    settings = settings or get_settings()
    configure_logging()
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port or settings.api.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
