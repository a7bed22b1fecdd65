"""Requests that arrive together share the work: predictions in one call, identical reads once."""

from __future__ import annotations

import asyncio
import threading
import time

from emps.api.batching import PredictBatcher


def test_requests_waiting_on_a_call_share_the_next_one_and_keep_their_own_part():
    """Twenty requests at once make a few calls, not twenty, each of at most `most_ids` ids,
    and each request gets the part of the answer for the ids it asked."""
    calls: list[list[str]] = []
    lock = threading.Lock()

    def run(ids: list[str]) -> dict[str, str]:
        with lock:
            calls.append(ids)
        time.sleep(0.05)
        return {i: f"p({i})" for i in ids}

    async def main() -> list:
        batcher = PredictBatcher(run, lambda answer, ids: [answer[i] for i in ids], most_ids=12)
        return await asyncio.gather(*(batcher.predict([f"E{k}", f"E{k + 1}"]) for k in range(20)))

    answers = asyncio.run(main())
    assert answers == [[f"p(E{k})", f"p(E{k + 1})"] for k in range(20)]
    assert all(len(ids) <= 12 for ids in calls)
    assert 2 <= len(calls) <= 4  # 21 ids, at most 12 a call
    assert sorted({i for ids in calls for i in ids}, key=lambda i: int(i[1:])) == [
        f"E{k}" for k in range(21)
    ]


def test_a_failing_call_refuses_every_request_it_carried():
    """The error of a shared call reaches each request of it, and the next call still runs."""

    def run(ids: list[str]) -> list[str]:
        if "BAD" in ids:
            raise LookupError("no champion")
        return ids

    async def main():
        batcher = PredictBatcher(run, lambda answer, ids: ids, most_ids=100)
        first = await asyncio.gather(
            batcher.predict(["BAD"]), batcher.predict(["A"]), return_exceptions=True
        )
        return first, await batcher.predict(["B"])

    (bad, other), after = asyncio.run(main())
    assert isinstance(bad, LookupError)
    assert other == ["A"] or isinstance(other, LookupError)
    assert after == ["B"]


def test_identical_reads_asked_while_one_runs_share_it_and_nothing_is_kept():
    """Reads of one key asked during a running read get its answer; a different key, or the
    same key after the read ended, reads again."""
    from emps.api.batching import SharedReads

    reads: list[str] = []

    def run(key: str):
        def read() -> str:
            reads.append(key)
            time.sleep(0.05)
            return f"{key}#{len(reads)}"

        return read

    async def main():
        shared = SharedReads()
        together = await asyncio.gather(
            *(shared.read("overview", run("overview")) for _ in range(10)),
            shared.read("alerts", run("alerts")),
        )
        later = await shared.read("overview", run("overview"))
        return together, later

    together, later = asyncio.run(main())
    assert len(set(together[:10])) == 1 and together[0].startswith("overview#")
    assert together[10].startswith("alerts#")
    assert reads.count("overview") == 2 and later != together[0]
