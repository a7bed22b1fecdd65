"""Watch the landing zone and start ingest when files arrive: `emps landing watch`.

The watcher emits one Prefect event, `emps.file.arrived`, for the files that appeared since its
last event; the ingest deployment's trigger (prefect.yaml) turns it into a run. Events are
coalesced: the first file after a quiet spell is announced at once, later ones at most every
`ingest_watch_min_interval_s`, so a burst of 1,000 files makes a few events, not 1,000 runs.

The ingest deployment runs one flow at a time: a run started while another is busy would be
cancelled (CANCEL_NEW), and a Cancelled run in the Prefect UI every minute tells nobody
anything. So the watcher only asks for a run when none is alive: a running ingest run keeps a
heartbeat file (`Heartbeat`, `run_alive`) and takes whatever arrives while it works or lingers,
and after an event the watcher gives the run it asked for `ingest_watch_rearm_s` to start
before it asks again. Files still waiting then, with no run alive, are announced again.

inotify (watchdog) wakes the watcher as soon as a file is renamed into place; a scan every
`ingest_watch_poll_s` is the fallback where inotify is unavailable and the check that matters,
since only finished files (not `.part` names) count. Folders in incoming/ (one per device, say)
are watched and scanned the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from emps.ingest.landing import Landing, scan
from emps.settings import Settings, get_settings

log = logging.getLogger("emps.ingest.watch")
EVENT = "emps.file.arrived"
ALIVE_EVENT = "emps.ingest.alive"
RESOURCE_ID = "emps.landing.incoming"
HEARTBEAT_FILE = ".ingest-run.json"  # in the landing root, beside incoming/
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_STALE_S = 5.0


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
    """Regular files waiting in incoming/ and its folders (paths relative to it) and their
    modification times (epoch seconds)."""
    found = scan(incoming)
    return {entry.rel: entry.stamp.mtime_ns / 1e9 for entry in [*found.ready, *found.settling]}


def run_alive(landing: Landing, now: float | None = None) -> bool:
    """Whether an ingest run's heartbeat is fresh: that run takes what arrives."""
    try:
        age = (time.time() if now is None else now) - (
            landing.root / HEARTBEAT_FILE
        ).stat().st_mtime
    except FileNotFoundError:
        return False
    return age <= HEARTBEAT_STALE_S


class Heartbeat:
    """An ingest run says it is alive while it works and lingers: it rewrites the heartbeat file
    every second (the watcher reads it) and calls `announce` every `every_s` seconds (the flow
    emits `emps.ingest.alive`, which holds back the deployment's safety-net trigger). A thread,
    so that a long feature build in between does not make the run look dead."""

    def __init__(
        self,
        landing: Landing,
        run_id: str | None,
        every_s: float,
        announce: Callable[[], None] | None = None,
    ):
        self.path = landing.root / HEARTBEAT_FILE
        self.run_id = run_id
        self.every_s = every_s
        self.announce = announce
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="emps-ingest-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._write()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        note = {"run": self.run_id, "host": socket.gethostname(), "pid": os.getpid()}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(note), encoding="utf-8")
        os.replace(tmp, self.path)

    def _beat(self) -> None:
        last_announced = 0.0
        while not self.stopped.is_set():
            try:
                self._write()
                if self.announce is not None and time.monotonic() - last_announced >= self.every_s:
                    last_announced = time.monotonic()
                    self.announce()
            except Exception:  # a missed beat must not end the run
                log.exception("ingest heartbeat failed; trying again")
            self.stopped.wait(HEARTBEAT_EVERY_S)


class Coalescer:
    """Decides, from successive looks at incoming/, when an event is due. No I/O: easy to test."""

    def __init__(self, min_interval_s: float, rearm_s: float):
        self.min_interval_s = min_interval_s
        self.rearm_s = rearm_s
        self.announced: set[str] = set()
        self.last_event_at: float | None = None
        self.awaiting_run = False  # an event went out and no run has shown life since

    def observe(
        self, waiting: dict[str, float], now: float, run_alive: bool = False
    ) -> Arrival | None:
        """The event to emit now for these waiting files, or None."""
        # Files that left incoming/ were claimed: forget them, the set stays as small as the dir.
        self.announced &= waiting.keys()
        if not self.announced:
            self.awaiting_run = False  # whoever took the announced files has them
        if run_alive:
            # The live run takes whatever arrives; should it end first, the files still waiting
            # are new again for the next event.
            self.awaiting_run = False
            self.announced.clear()
            return None
        since_last = None if self.last_event_at is None else now - self.last_event_at
        if self.awaiting_run and since_last is not None and since_last < self.rearm_s:
            return None  # the run the last event asked for is starting; it takes these too
        new = [name for name in waiting if name not in self.announced]
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
        self.awaiting_run = True
        return Arrival(
            new=len(new),
            waiting=len(waiting),
            oldest_wait_s=max(oldest_wait, 0.0),
            examples=sorted(new)[:5],
            rearmed=bool(rearm),
        )

    def failed(self) -> None:
        """The last event did not reach the server: no run is coming for it."""
        self.awaiting_run = False


def emit_arrival(arrival: Arrival, api: str | None = None, auth: str | None = None) -> bool:
    """Send the event to the Prefect server's events API (`POST {api}/events`; default: the
    PREFECT_API_URL environment variable), with the server's credential (`auth`, default
    PREFECT_API_AUTH_STRING) and a CSRF token (emps.prefect_api); whether the server took it.

    Prefect's `emit_event` does the same over a websocket, but importing Prefect would more than
    double this small always-on process (~45 -> ~100 MB resident). A failed send is logged, not
    raised: files still waiting are announced again after `ingest_watch_rearm_s`, and the
    deployment's safety-net trigger ingests them regardless.
    """
    import httpx

    from emps import prefect_api

    api = api or os.environ.get("PREFECT_API_URL")
    if not api:
        log.warning("PREFECT_API_URL is not set: %s not sent", EVENT)
        return False
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
        return False
    return True


class LandingWatcher:
    """Looks at incoming/ when inotify says something changed, or every poll interval."""

    def __init__(
        self,
        settings: Settings | None = None,
        emit: Callable[[Arrival], bool | None] = emit_arrival,
    ):
        self.settings = settings or get_settings()
        self.landing = Landing(self.settings.landing_dir).ensure()
        self.coalescer = Coalescer(
            self.settings.ingest.watch_min_interval_s, self.settings.ingest.watch_rearm_s
        )
        self.emit = emit
        self.changed = threading.Event()
        self.stopped = threading.Event()
        self.events = 0

    def check(self, now: float | None = None) -> Arrival | None:
        """Look once; emit and return the event when one is due."""
        now = time.time() if now is None else now
        arrival = self.coalescer.observe(
            waiting_names(self.landing.incoming), now, run_alive(self.landing, now)
        )
        if arrival is not None:
            try:
                sent = self.emit(arrival)
            except Exception:
                self.coalescer.failed()
                raise
            if sent is False:
                self.coalescer.failed()
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
                if self.changed.wait(self.settings.ingest.watch_poll_s):
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
        observer.schedule(Wake(), str(self.landing.incoming), recursive=True)
        try:
            observer.start()
        except OSError as exc:  # out of inotify watches, an exotic file system
            log.warning("inotify unavailable (%s); polling incoming/ instead", exc)
            return None
        return observer
