"""Recording accepted ingest requests in ops.api_ingest_requests, many in one statement.

A request without an Idempotency-Key needs no row before its readings are on disk: once the
drop writer's fsync covers them, its row (device, body digest, drop file and rows) joins those
of the requests waiting at that moment, and one call of ops.api_accept_requests records them
all. While that call runs, the next requests gather for the following one, so under load a
statement carries many requests and the database is asked once per batch, not twice per
request. A request is answered only after its row is committed: the id it gets can be read back.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from emps.api.drops import Placement

ACCEPT = "select ops.api_accept_requests(%s, %s, %s, %s, %s, %s, %s)"


@dataclass(frozen=True)
class Accepted:
    """One request whose readings are durable: what its ledger row says."""

    request_id: uuid.UUID
    device_id: str
    body_sha256: bytes
    readings: int
    placement: Placement


class AcceptedLedger:
    """Batches `Accepted` rows into ops.api_ingest_requests; see the module docstring."""

    def __init__(self, call: Callable[[str, tuple], Awaitable[list[tuple]]]):
        self.call = call
        self.waiting: list[tuple[Accepted, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None

    async def record(self, row: Accepted) -> None:
        """Return once the row is committed; raise what the database call raised."""
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self.waiting:
            batch, self.waiting = self.waiting, []
            rows = [row for row, _ in batch]
            try:
                await self.call(
                    ACCEPT,
                    (
                        [r.request_id for r in rows],
                        [r.device_id for r in rows],
                        [r.body_sha256 for r in rows],
                        [r.readings for r in rows],
                        [r.placement.file_name for r in rows],
                        [r.placement.first_row for r in rows],
                        [r.placement.last_row for r in rows],
                    ),
                )
            except Exception as exc:  # every request of the batch gets the same answer
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)
