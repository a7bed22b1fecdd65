"""The API's drop files reach ingest on their interval even while requests never stop."""

from __future__ import annotations

import asyncio

from emps.api.drops import DropWriter


def test_a_drop_file_is_handed_to_ingest_under_steady_load(tmp_path):
    """A request still waiting for its fsync when the file's interval is up: new requests go to
    a new file, and the old one is renamed into place as soon as nothing waits on it, rather
    than staying open for as long as requests keep coming."""

    async def scenario() -> tuple[list[str], list[str], str, str]:
        now = [0.0]
        writer = DropWriter(
            tmp_path, group_commit_s=0.01, interval_s=5.0, queue_max=1000, clock=lambda: now[0]
        )
        writer.landing.ensure()
        first = await writer.append("gw-1", [b'{"n": 1}'])
        now[0] = 6.0
        waiting = writer.open["gw-1"]
        waiting.waiting += 1  # a request in flight on the old file
        await writer.rotate()
        second = await writer.append("gw-1", [b'{"n": 2}'])
        folder = tmp_path / "incoming" / "gw-1"
        while_waiting = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        waiting.waiting -= 1
        await writer.rotate()
        after = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        await writer.stop()
        return while_waiting, after, first.file_name, second.file_name

    while_waiting, after, first, second = asyncio.run(scenario())
    assert first != second  # the second request went to a new file
    assert while_waiting == []  # the old one waits for its request only
    assert after == [first.split("/")[-1]]
