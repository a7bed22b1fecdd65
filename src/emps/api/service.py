"""What the API's routes share: the service (settings, catalog, database pool, drop writer,
device keys) and the error every route raises for an answer other than success."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import Request
from fastapi.responses import JSONResponse
from psycopg_pool import AsyncConnectionPool

from emps.api.batching import PredictBatcher
from emps.api.devices import split_key
from emps.api.drops import DropWriter
from emps.api.ledger import AcceptedLedger
from emps.api.readings import MAX_PROBLEMS, Problem
from emps.catalog import load_catalog
from emps.db import Role, database_url
from emps.settings import Settings

log = logging.getLogger("emps.api")


@dataclass(frozen=True)
class Device:
    device_id: str
    equipment_ids: frozenset[str]
    key_id: int


class ApiError(Exception):
    """An answer other than success: status, message, and headers or details to add."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        errors: list[Problem] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.errors = errors or []
        self.extra = extra or {}

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"detail": self.message, **self.extra}
        if self.errors:
            body["errors"] = [p.as_dict() for p in self.errors[:MAX_PROBLEMS]]
            if len(self.errors) > MAX_PROBLEMS:
                body["more_errors"] = len(self.errors) - MAX_PROBLEMS
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class KeyBuckets:
    """A token bucket per device key: `rate` requests a second, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.buckets: dict[int, tuple[float, float]] = {}

    def take(self, key_id: int) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = self.clock()
        tokens, then = self.buckets.get(key_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens >= 1:
            self.buckets[key_id] = (tokens - 1, now)
            return 0.0
        self.buckets[key_id] = (tokens, now)
        return (1 - tokens) / self.rate


class Service:
    """What the routes share: settings, catalog, the database pool, the drop writer."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.catalog = load_catalog(settings.catalog_path)
        self.pool = AsyncConnectionPool(
            database_url(Role.API, settings),
            min_size=1,
            max_size=4,
            open=False,
            kwargs={"autocommit": True, "application_name": "emps-api"},
        )
        self.writer = DropWriter(
            settings.landing_dir,
            settings.api.group_commit_ms / 1000,
            settings.api.drop_interval_s,
            settings.api.queue_max,
        )
        self.accepted = AcceptedLedger(self.call)
        self.predictor = PredictBatcher(
            self._predict_ids, lambda answer, ids: answer.only(ids), settings.api.predict_max
        )
        self.buckets = KeyBuckets(settings.api.rate_per_key, settings.api.rate_burst)
        self.keys: dict[tuple[str, bytes], tuple[Device | None, float]] = {}
        self.idempotency_locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def one_at_a_time(self, device_id: str, idempotency_key: str | None):
        """Requests with the same Idempotency-Key of a device run one after the other (the
        second then finds the first's answer)."""
        if idempotency_key is None:
            yield
            return
        name = (device_id, idempotency_key)
        lock, users = self.idempotency_locks.get(name, (asyncio.Lock(), 0))
        self.idempotency_locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self.idempotency_locks[name]
            if users <= 1:
                del self.idempotency_locks[name]
            else:
                self.idempotency_locks[name] = (lock, users - 1)

    def _predict_ids(self, equipment_ids: list[str]):
        # The model's code (pandas, scikit-learn) loads at the first prediction, not with the API.
        from emps.ml.predict import predict_many

        return predict_many(equipment_ids, None, self.settings)

    async def start(self) -> None:
        await self.pool.open(wait=False)
        await self.writer.start()

    async def stop(self) -> None:
        await self.writer.stop()
        await self.pool.close()

    async def call(self, sql: str, params: tuple) -> list[tuple]:
        try:
            async with self.pool.connection(timeout=10) as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchall() if cur.description else []
        except (psycopg.OperationalError, TimeoutError) as exc:
            log.warning("database unavailable: %s", type(exc).__name__)
            raise ApiError(
                503, "the database is unavailable; retry shortly", {"Retry-After": "5"}
            ) from None

    async def device_for(self, request: Request) -> Device:
        key = _presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "a device key is required: send `Authorization: Bearer <key>` or "
                "`X-API-Key: <key>` (keys come from `emps devices add`)",
                {"WWW-Authenticate": "Bearer"},
            )
        found = split_key(key)
        if found is None:
            raise ApiError(401, "the device key is not valid", {"WWW-Authenticate": "Bearer"})
        now = time.monotonic()
        cached = self.keys.get(found)
        if cached is not None and cached[1] > now:
            device = cached[0]
        else:
            rows = await self.call(
                "select device_id, equipment_ids, key_id from ops.api_device_for_key(%s, %s)",
                found,
            )
            device = Device(rows[0][0], frozenset(rows[0][1]), rows[0][2]) if rows else None
            if len(self.keys) > 10_000:
                self.keys.clear()
            self.keys[found] = (device, now + self.settings.api.key_cache_s)
        if device is None:
            raise ApiError(
                401, "the device key is not valid or was revoked", {"WWW-Authenticate": "Bearer"}
            )
        request.state.device = device.device_id
        return device


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    return api_key or None
