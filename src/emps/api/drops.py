"""Readings accepted over HTTP become drop files, so they take the same exactly-once path as
files devices drop.

Each device has one open NDJSON file at a time, `incoming/<device>/.api-<time>-<token>.ndjson.part`
(a name ingest never claims). A request's readings are appended as lines and the request is
answered only after an fsync covers them: requests arriving while an fsync runs (or within the
optional group-commit wait) share the next one. Every `interval_s` new requests go to a new file, and the old one, once no request
waits on it, is closed and renamed to `api-<time>-<token>.ndjson` in the same folder, which the
watcher announces and ingest claims.

The writer holds an exclusive lock (flock) on each file it writes. When the API starts, files of
a writer that died (unlocked) are finished: a torn last line (never answered, so never
accepted) is cut off and the file is renamed into place, so no accepted reading waits forever.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from emps.ingest.landing import Landing

log = logging.getLogger("emps.api")
PARTIAL = re.compile(r"^\.(api-[0-9TZ]+-[0-9a-f]+\.ndjson)\.part$")


class Overloaded(Exception):
    """Too many readings wait for their fsync: the client should retry later."""


@dataclass(frozen=True)
class Placement:
    """Where a request's readings are: the drop file (as ingest names it) and its rows."""

    file_name: str
    first_row: int
    last_row: int


@dataclass(eq=False)
class _Drop:
    device_id: str
    folder: Path
    final_name: str
    fd: int
    opened_at: float
    rows: int = 0
    size: int = 0
    waiting: int = 0  # requests written here whose fsync has not finished
    broken: bool = False
    synced: set[asyncio.Future] = field(default_factory=set)

    @property
    def partial(self) -> Path:
        return self.folder / f".{self.final_name}.part"

    @property
    def rel(self) -> str:
        return f"{self.device_id}/{self.final_name}"


class DropWriter:
    """Appends readings to per-device drop files with group commit; see the module docstring."""

    def __init__(
        self,
        landing_root: Path,
        group_commit_s: float,
        interval_s: float,
        queue_max: int,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.landing = Landing(landing_root)
        self.group_commit_s = group_commit_s
        self.interval_s = interval_s
        self.queue_max = queue_max
        self.clock = clock
        self.open: dict[str, _Drop] = {}
        # Files past their interval that new requests no longer go to, closed once no request
        # waits on them: under steady load a file would otherwise never have none waiting.
        self.retiring: list[_Drop] = []
        self.lock = asyncio.Lock()
        self.pending: list[tuple[asyncio.Future, _Drop]] = []
        self.queued_readings = 0
        self._committer: asyncio.Task | None = None
        self._rotator: asyncio.Task | None = None

    # -- life ----------------------------------------------------------------------------

    async def start(self) -> None:
        self.landing.ensure()
        finished = await asyncio.to_thread(recover, self.landing)
        if finished:
            log.warning("finished %d drop file(s) an earlier API process left open", finished)
        self._rotator = asyncio.create_task(self._rotate_loop())

    async def stop(self) -> None:
        if self._rotator is not None:
            self._rotator.cancel()
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        async with self.lock:
            for drop in [*self.open.values(), *self.retiring]:
                await asyncio.to_thread(self._close, drop)
            self.open.clear()
            self.retiring.clear()

    # -- appending -----------------------------------------------------------------------

    async def append(self, device_id: str, lines: list[bytes]) -> Placement:
        """Write the lines to the device's open file; return once they are on disk."""
        if self.queued_readings + len(lines) > self.queue_max:
            raise Overloaded(f"{self.queued_readings} readings wait for the disk")
        data = b"".join(line + b"\n" for line in lines)
        loop = asyncio.get_running_loop()
        self.queued_readings += len(lines)
        try:
            async with self.lock:
                drop = self.open.get(device_id)
                if drop is None:
                    drop = await asyncio.to_thread(self._open, device_id)
                    self.open[device_id] = drop
                _write_all(drop, data)
                placement = Placement(drop.rel, drop.rows + 1, drop.rows + len(lines))
                drop.rows += len(lines)
                drop.size += len(data)
                drop.waiting += 1
                done = loop.create_future()
                self.pending.append((done, drop))
                if self._committer is None or self._committer.done():
                    self._committer = asyncio.create_task(self._commit_after_window())
            try:
                await done
            finally:
                drop.waiting -= 1
        finally:
            self.queued_readings -= len(lines)
        return placement

    async def _commit_after_window(self) -> None:
        # Requests arriving while an fsync runs wait for the next one: under load each fsync
        # covers many requests, with no fixed wait when there are few.
        if self.group_commit_s:
            await asyncio.sleep(self.group_commit_s)
        while self.pending:
            async with self.lock:
                batch, self.pending = self.pending, []
            drops = {drop for _, drop in batch}
            failed: dict[_Drop, OSError] = {}
            for drop in drops:
                try:
                    await asyncio.to_thread(os.fsync, drop.fd)
                except OSError as exc:
                    # What the file holds is unknown now: no request in it is accepted, and
                    # the file is not written to again.
                    drop.broken = True
                    failed[drop] = exc
                    log.error("fsync of %s failed: %s", drop.partial, exc.strerror)
            for done, drop in batch:
                if done.done():
                    continue
                if drop in failed:
                    done.set_exception(failed[drop])
                else:
                    done.set_result(None)

    def _open(self, device_id: str) -> _Drop:
        folder = self.landing.incoming / device_id
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"api-{stamp}-{secrets.token_hex(4)}.ndjson"
        path = folder / f".{name}.part"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _fsync_dir(folder)  # the file's name is durable before any reading in it is accepted
        return _Drop(device_id, folder, name, fd, self.clock())

    # -- handing files to ingest -----------------------------------------------------------

    async def _rotate_loop(self) -> None:
        tick = min(self.interval_s / 4, 0.25)
        while True:
            await asyncio.sleep(tick)
            try:
                await self.rotate()
            except OSError:
                log.exception("could not hand a drop file to ingest; trying again")

    async def rotate(self, force: bool = False) -> int:
        """Close and rename into place the files open long enough (all, with `force`) that no
        request waits on; returns how many."""
        now = self.clock()
        handed = 0
        async with self.lock:
            for device_id, drop in list(self.open.items()):
                if force or drop.broken or now - drop.opened_at >= self.interval_s:
                    del self.open[device_id]
                    self.retiring.append(drop)
            for drop in list(self.retiring):
                if drop.waiting == 0:
                    self.retiring.remove(drop)
                    await asyncio.to_thread(self._close, drop)
                    handed += 1
        return handed

    @staticmethod
    def _close(drop: _Drop) -> None:
        try:
            os.fsync(drop.fd)
        except OSError as exc:
            # The accepted readings in it were fsynced before they were answered; the lines of
            # requests answered with an error may be there too (retried, they are duplicates).
            log.error("closing %s: fsync failed (%s); handing it to ingest", drop.partial, exc)
        finally:
            os.close(drop.fd)  # releases the flock
        if drop.rows == 0:
            drop.partial.unlink(missing_ok=True)
            return
        os.rename(drop.partial, drop.folder / drop.final_name)
        _fsync_dir(drop.folder)


def _write_all(drop: _Drop, data: bytes) -> None:
    """Append all of `data` or nothing: a failed write is cut back off the file."""
    if drop.broken:
        raise OSError(f"{drop.partial} is no longer written to after a failed fsync")
    written = 0
    try:
        while written < len(data):
            written += os.write(drop.fd, data[written:])
    except OSError:
        try:
            os.ftruncate(drop.fd, drop.size)
        except OSError:
            drop.broken = True
        raise


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def recover(landing: Landing) -> int:
    """Finish the drop files API processes that died left open: cut a torn last line, rename
    into place. Files another live process holds (locked) are left alone."""
    finished = 0
    if not landing.incoming.is_dir():
        return 0
    for folder in sorted(p for p in landing.incoming.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            match = PARTIAL.match(path.name)
            if match is None or not path.is_file() or path.is_symlink():
                continue
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live writer's file
                size = os.fstat(fd).st_size
                keep = _complete_length(fd, size)
                if keep != size:
                    os.ftruncate(fd, keep)
                os.fsync(fd)
            finally:
                os.close(fd)
            if keep == 0:
                path.unlink(missing_ok=True)
            else:
                os.rename(path, folder / match.group(1))
                finished += 1
            _fsync_dir(folder)
    return finished


def _complete_length(fd: int, size: int) -> int:
    """The length of the file up to and including its last newline."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        data = os.pread(fd, end - start, start)
        newline = data.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0
