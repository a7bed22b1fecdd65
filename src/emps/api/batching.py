"""Predictions for requests that arrive together, made in one call.

A prediction costs mostly what every call pays once (the thresholds, the registered ids and the
latest feature rows read from the database, a walk of the forest), little per equipment: one
equipment took ~9 ms of server CPU, twenty in one call ~14 ms. Requests for equipment ids
without overrides therefore wait while a call runs and then go together in the next one, whose
answer each request takes its own part of. Alone, a request waits for nothing: its call starts at
once. Requests with overrides (what if) or for the whole fleet run on their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from typing import Any


class PredictBatcher:
    """Coalesces concurrent `predict(ids)` calls into calls of `run(union of ids)`.

    `run` is a blocking function (it runs in a worker thread) returning an object with
    `predictions` (dicts with `equipment_id`), `not_registered`, `no_features` and
    `model_version`; `part` cuts one request's answer out of it."""

    def __init__(
        self,
        run: Callable[[list[str]], Any],
        part: Callable[[Any, Sequence[str]], Any],
        most_ids: int,
    ):
        self.run = run
        self.part = part
        self.most_ids = most_ids
        self.waiting: list[tuple[list[str], asyncio.Future]] = []
        self._caller: asyncio.Task | None = None

    async def predict(self, equipment_ids: Sequence[str]) -> Any:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((list(dict.fromkeys(equipment_ids)), done))
        if self._caller is None or self._caller.done():
            self._caller = asyncio.create_task(self._call())
        return await done

    def _next_batch(self) -> list[tuple[list[str], asyncio.Future]]:
        """The waiting requests that fit in one call (always at least one)."""
        batch: list[tuple[list[str], asyncio.Future]] = []
        ids: set[str] = set()
        while self.waiting:
            asked, done = self.waiting[0]
            if batch and len(ids | set(asked)) > self.most_ids:
                break
            self.waiting.pop(0)
            if done.done():  # its client went away
                continue
            batch.append((asked, done))
            ids.update(asked)
        return batch

    async def _call(self) -> None:
        while self.waiting:
            batch = self._next_batch()
            if not batch:
                continue
            union = list(dict.fromkeys(i for asked, _ in batch for i in asked))
            try:
                answer = await asyncio.to_thread(self.run, union)
            except Exception as exc:  # each request of the call gets the same refusal
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for asked, done in batch:
                if not done.done():
                    done.set_result(self.part(answer, asked))


class SharedReads:
    """Identical reads asked while one is running share its answer (single flight).

    Twenty dashboards polling the overview at once make one set of queries, not twenty, and
    nobody gets an answer older than the read that was running when they asked: nothing is
    kept once the read is done."""

    def __init__(self) -> None:
        self.running: dict[Hashable, asyncio.Future] = {}

    async def read(self, key: Hashable, run: Callable[[], Any]) -> Any:
        """The answer of `run()` (blocking: it runs in a worker thread), shared with the
        requests asking `key` meanwhile."""
        shared = self.running.get(key)
        if shared is None:
            shared = asyncio.ensure_future(asyncio.to_thread(run))
            self.running[key] = shared
            shared.add_done_callback(lambda _done: self.running.pop(key, None))
        # A client going away cancels its wait, not the read the others wait on.
        return await asyncio.shield(shared)
