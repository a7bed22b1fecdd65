"""Watch the landing zone and start ingest when files arrive: `emps landing watch`.

The watcher emits one Prefect event, `emps.file.arrived`, for the files that appeared since its
last event; the ingest deployment's trigger (prefect.yaml) turns it into a run. Events are
coalesced: the first file after a quiet spell is announced at once, later ones at most every
`ingest_watch_min_interval_s`, so a burst of 1,000 files makes a few events, not 1,000 runs.

An event can come to nothing: the ingest deployment runs one flow at a time and cancels a run
that would start while another is busy (CANCEL_NEW). The busy run ingests whatever arrives while
it works (it loops until incoming/ is empty), but a file landing just after its last look would
wait for the next minute's schedule. So files still waiting `ingest_watch_rearm_s` after the last
event are announced again.

inotify (watchdog) wakes the watcher as soon as a file is renamed into place; a scan every
`ingest_watch_poll_s` is the fallback where inotify is unavailable and the check that matters,
since only finished files (not `.part` names) count.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from emps.ingest.landing import Landing, is_partial_name
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.ingest.watch")
EVENT = "emps.file.arrived"
RESOURCE_ID = "emps.landing.incoming"


@dataclass(frozen=True)
class Arrival:
    """What one `emps.file.arrived` event says: how many files are new, how many wait in all."""

    new: int
    waiting: int
    oldest_wait_s: float
    examples: list[str] = field(default_factory=list)
    rearmed: bool = False

    def payload(self) -> dict:
        return {
            "new_files": self.new,
            "waiting_files": self.waiting,
            "oldest_wait_s": round(self.oldest_wait_s, 1),
            "examples": self.examples,
            "rearmed": self.rearmed,
        }


def waiting_names(incoming: Path) -> dict[str, float]:
    """Finished regular files in incoming/ and their modification times (epoch seconds)."""
    found: dict[str, float] = {}
    try:
        scan = os.scandir(incoming)
    except FileNotFoundError:
        return found
    with scan:
        for entry in scan:
            if is_partial_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                found[entry.name] = info.st_mtime
    return found


class Coalescer:
    """Decides, from successive looks at incoming/, when an event is due. No I/O: easy to test."""

    def __init__(self, min_interval_s: float, rearm_s: float):
        self.min_interval_s = min_interval_s
        self.rearm_s = rearm_s
        self.announced: set[str] = set()
        self.last_event_at: float | None = None

    def observe(self, waiting: dict[str, float], now: float) -> Arrival | None:
        """The event to emit now for these waiting files, or None."""
        # Files that left incoming/ were claimed: forget them, the set stays as small as the dir.
        self.announced &= waiting.keys()
        new = [name for name in waiting if name not in self.announced]
        since_last = None if self.last_event_at is None else now - self.last_event_at
        oldest_wait = max((now - mtime for mtime in waiting.values()), default=0.0)
        rearm = (
            not new
            and waiting
            and since_last is not None
            and since_last >= self.rearm_s
            and oldest_wait >= self.rearm_s
        )
        if not (new and (since_last is None or since_last >= self.min_interval_s)) and not rearm:
            return None
        self.announced |= waiting.keys()
        self.last_event_at = now
        return Arrival(
            new=len(new),
            waiting=len(waiting),
            oldest_wait_s=max(oldest_wait, 0.0),
            examples=sorted(new)[:5],
            rearmed=bool(rearm),
        )


def emit_arrival(arrival: Arrival, api: str | None = None, auth: str | None = None) -> None:
    """Send the event to the Prefect server's events API (`POST {api}/events`; default: the
    PREFECT_API_URL environment variable), with the server's credential (`auth`, default
    PREFECT_API_AUTH_STRING) and a CSRF token (emps.prefect_api).

    Prefect's `emit_event` does the same over a websocket, but importing Prefect would more than
    double this small always-on process (~45 -> ~100 MB resident). A failed send is logged, not
    raised: files still waiting are announced again after `ingest_watch_rearm_s`, and the
    one-minute schedule ingests them regardless.
    """
    import httpx

    from emps import prefect_api

    api = api or os.environ.get("PREFECT_API_URL")
    if not api:
        log.warning("PREFECT_API_URL is not set: %s not sent", EVENT)
        return
    event = {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": EVENT,
        "resource": {
            "prefect.resource.id": RESOURCE_ID,
            "prefect.resource.name": "landing/incoming",
        },
        "payload": arrival.payload(),
    }
    try:
        with prefect_api.client(api, auth, timeout=10) as prefect:
            prefect.post("/events", json=[event]).raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("%s not sent to %s: %s", EVENT, api, exc)


class LandingWatcher:
    """Looks at incoming/ when inotify says something changed, or every poll interval."""

    def __init__(
        self,
        settings: Settings | None = None,
        emit: Callable[[Arrival], None] = emit_arrival,
    ):
        self.settings = settings or get_settings()
        self.landing = Landing(self.settings.landing_dir).ensure()
        self.coalescer = Coalescer(
            self.settings.ingest_watch_min_interval_s, self.settings.ingest_watch_rearm_s
        )
        self.emit = emit
        self.changed = threading.Event()
        self.stopped = threading.Event()
        self.events = 0

    def check(self, now: float | None = None) -> Arrival | None:
        """Look once; emit and return the event when one is due."""
        arrival = self.coalescer.observe(
            waiting_names(self.landing.incoming), time.time() if now is None else now
        )
        if arrival is not None:
            self.emit(arrival)
            self.events += 1
            log.info("%s: %s", EVENT, arrival.payload())
        return arrival

    def run(self, max_s: float | None = None) -> int:
        """Watch until stopped (or for max_s seconds); returns the number of events emitted."""
        observer = self._start_inotify()
        began = time.monotonic()
        try:
            while not self.stopped.is_set():
                try:
                    self.check()
                except Exception:  # a bad look at incoming/ must not end the watching
                    log.exception("looking at incoming/ failed; looking again")
                if max_s is not None and time.monotonic() - began >= max_s:
                    break
                # Woken early by inotify; then wait a moment so a device's burst is seen whole
                # by one look, not file by file.
                if self.changed.wait(self.settings.ingest_watch_poll_s):
                    self.changed.clear()
                    self.stopped.wait(0.05)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
        return self.events

    def stop(self) -> None:
        self.stopped.set()
        self.changed.set()

    def _start_inotify(self):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # polling alone still works, a little later
            return None
        changed = self.changed

        class Wake(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                changed.set()

        observer = Observer()
        observer.schedule(Wake(), str(self.landing.incoming), recursive=False)
        try:
            observer.start()
        except OSError as exc:  # out of inotify watches, an exotic file system
            log.warning("inotify unavailable (%s); polling incoming/ instead", exc)
            return None
        return observer
