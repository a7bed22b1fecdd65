"""The landing zone on disk: which files wait, claiming them, and where they go afterwards.

incoming/ (and folders in it, e.g. one per device) -> processing/ (claimed, renamed to a safe
unique name) -> archive/YYYY/MM/DD/ or quarantine/ (with `<name>.reason.json`). Moves are renames
inside one directory tree, so each step is atomic: a file is never seen half-moved.

Which files wait: regular files whose name is not a writer's temporary name (dot files, `*.part`,
`*.tmp`, ...). Symbolic links are never followed or claimed, and neither are FIFOs, sockets or
devices; such entries are reported (`Scan.ignored`) once they are old enough to look forgotten.
A file is claimed when it is finished: announced by the kernel as closed after writing or renamed
into place (`ArrivalLog`), or, found only by the scan, once its size and modification time have
not changed for `settle_s` seconds. The claim renames the entry, then opens what it moved
without following links (`O_NOFOLLOW`) and checks with `fstat` that it is a regular file: a
link swapped in between scan and claim is refused, never read.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import re
import secrets
import select
import stat
import struct
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from emps.ingest.files import FileRejected, open_regular

# A device still writing a file uses one of these names; we wait for its final rename.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".filepart", ".swp")
SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SAFE_NAME = 120
MAX_DEPTH = 6  # incoming/<site>/<device>/... deeper folders are not looked into
HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Landing:
    """The four landing directories under one root."""

    root: Path

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    def ensure(self) -> Landing:
        for path in (self.incoming, self.processing, self.archive, self.quarantine):
            path.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True)
class Stamp:
    """What identifies a version of a file: its size, modification time and inode."""

    size: int
    mtime_ns: int
    ino: int
    dev: int

    @classmethod
    def of(cls, info: os.stat_result) -> Stamp:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


@dataclass
class ClaimedFile:
    """A file moved into processing/ by this run (or taken back from a dead one)."""

    original_name: str
    path: Path
    size_bytes: int
    received_at: datetime
    sha256: str = ""
    ledger_id: int | None = None
    stamp: Stamp | None = None
    refused: str | None = None  # why the claimed entry cannot be read at all (a link, a FIFO)
    attempts: int = 1

    @property
    def stored_name(self) -> str:
        return self.path.name

    @property
    def ledger_row_id(self) -> int:
        """Its row in raw.ingest_files: every file past its claim has one."""
        if self.ledger_id is None:
            raise ValueError(f"{self.original_name} has no ingest ledger row yet")
        return self.ledger_id


@dataclass(frozen=True)
class Entry:
    """A regular file waiting in incoming/: `rel` is its path there, '/'-separated."""

    rel: str
    path: Path
    stamp: Stamp


@dataclass(frozen=True)
class Ignored:
    """An entry of incoming/ ingest will not claim, and why."""

    rel: str
    why: str
    size: int | None
    modified_at: datetime


@dataclass
class Scan:
    ready: list[Entry] = field(default_factory=list)
    settling: list[Entry] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


def is_partial_name(name: str) -> bool:
    """True for names a writer uses before its final rename (dot files, *.part, *.tmp)."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(PARTIAL_SUFFIXES)


def _why_ignored(name: str, info: os.stat_result) -> str | None:
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link (links are never followed)"
    if name.startswith("."):
        return "a hidden (dot) name, used by writers before their final rename"
    if name.lower().endswith(PARTIAL_SUFFIXES):
        return "a temporary name (.part, .tmp, ...) a writer has not renamed yet"
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISDIR(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    return None


def safe_name(name: str) -> str:
    """A file name that cannot escape a directory or confuse a shell: ASCII, no separators.

    Untrusted names may hold `../`, spaces, control characters or any Unicode; the original is
    kept in the ledger, this one is only used on disk.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = SAFE_CHARS.sub("_", ascii_name).strip("._-") or "file"
    return cleaned[-MAX_SAFE_NAME:]


def printable_name(name: str) -> str:
    """The name as text the database accepts: undecodable bytes become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", "")


class SettleClock:
    """Remembers when each waiting file was first seen as it is now, so a file found by the scan
    is claimed once unchanged for `settle_s`, even when its modification time lies in the future
    (a device with a wrong clock on a shared file system)."""

    def __init__(self, settle_s: float, clock: Callable[[], float] = time.monotonic):
        self.settle_s = settle_s
        self.clock = clock
        self.first_seen: dict[str, tuple[Stamp, float]] = {}

    def settled(self, entry: Entry, now_ns: int) -> bool:
        if self.settle_s <= 0:
            return True
        now = self.clock()
        seen = self.first_seen.get(entry.rel)
        if seen is None or seen[0] != entry.stamp:
            self.first_seen[entry.rel] = (entry.stamp, now)
            seen = self.first_seen[entry.rel]
        unchanged_for = max((now_ns - entry.stamp.mtime_ns) / 1e9, now - seen[1])
        return unchanged_for >= self.settle_s

    def forget_except(self, rels: set[str]) -> None:
        for rel in list(self.first_seen):
            if rel not in rels:
                del self.first_seen[rel]


def files_waiting(landing_dir: Path) -> bool:
    """True when a regular file waits in the zone's incoming/ or its folders (ready or still
    settling)."""
    found = scan(Landing(landing_dir).ensure().incoming)
    return bool(found.ready or found.settling)


def scan(
    incoming: Path,
    *,
    settle: SettleClock | None = None,
    announced: Callable[[str], Stamp | None] | None = None,
    now_ns: int | None = None,
) -> Scan:
    """Files waiting in incoming/ and its folders (oldest first), sorted into ready to claim
    and still settling, plus the entries that are never claimed."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    found = Scan()
    entries: list[Entry] = []

    def walk(folder: Path, prefix: str, depth: int) -> None:
        try:
            scanner = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        with scanner:
            for item in scanner:
                rel = prefix + item.name
                try:
                    info = item.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                why = _why_ignored(item.name, info)
                if why is not None:
                    found.ignored.append(
                        Ignored(
                            printable_name(rel),
                            why,
                            info.st_size if stat.S_ISREG(info.st_mode) else None,
                            datetime.fromtimestamp(info.st_mtime, UTC),
                        )
                    )
                elif stat.S_ISDIR(info.st_mode):
                    if depth < MAX_DEPTH:
                        walk(Path(item.path), rel + "/", depth + 1)
                else:
                    entries.append(Entry(rel, Path(item.path), Stamp.of(info)))

    walk(incoming, "", 1)
    entries.sort(key=lambda e: (e.stamp.mtime_ns, e.rel))
    for entry in entries:
        finished = announced is not None and announced(entry.rel) == entry.stamp
        if finished or settle is None or settle.settled(entry, now_ns):
            found.ready.append(entry)
        else:
            found.settling.append(entry)
    if settle is not None:
        settle.forget_except({e.rel for e in entries})
    return found


def waiting_files(landing: Landing, limit: int) -> list[Path]:
    """Regular files waiting in incoming/ and its folders, oldest first, at most `limit`."""
    return [e.path for e in scan(landing.incoming).ready[:limit]]


def entry_for(landing: Landing, rel: str) -> Entry | None:
    """The entry at `rel` under incoming/ when it is a regular file (names given explicitly)."""
    path = landing.incoming / rel
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
        return None
    return Entry(rel, path, Stamp.of(info))


def claim(landing: Landing, entry: Entry) -> ClaimedFile | None:
    """Move one incoming file to processing/ under a unique safe name, then read it once to hash
    it; None if another run took it first.

    What was moved is opened without following links and must be a regular file: otherwise the
    claim carries `refused` and is quarantined unread.
    """
    token = secrets.token_hex(6)
    target = landing.processing / f"{token}-{safe_name(entry.rel)}"
    try:
        os.rename(entry.path, target)
    except FileNotFoundError:
        return None
    claimed = ClaimedFile(
        original_name=printable_name(entry.rel),
        path=target,
        size_bytes=entry.stamp.size,
        received_at=datetime.fromtimestamp(entry.stamp.mtime_ns / 1e9, UTC),
    )
    try:
        with open_regular(target) as handle:
            info = os.fstat(handle.fileno())
            claimed.sha256 = _sha256(handle)
    except FileRejected as exc:
        claimed.refused = exc.reason
        claimed.sha256 = hashlib.sha256(f"refused:{target.name}".encode()).hexdigest()
        return claimed
    claimed.stamp = Stamp.of(info)
    claimed.size_bytes = info.st_size
    return claimed


def _sha256(handle) -> str:
    digest = hashlib.sha256()
    while block := handle.read(HASH_BLOCK):
        digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    with open_regular(path) as handle:
        return _sha256(handle)


def stamp_of(path: Path) -> Stamp | None:
    try:
        return Stamp.of(path.lstat())
    except FileNotFoundError:
        return None


def archive(landing: Landing, claimed: ClaimedFile, when: datetime | None = None) -> Path | None:
    """Move a finished file to archive/YYYY/MM/DD/; None when it is already gone."""
    when = when or datetime.now(UTC)
    folder = landing.archive / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    return _move(claimed.path, folder / claimed.stored_name)


def quarantine(landing: Landing, claimed: ClaimedFile, reason: str, **details) -> Path | None:
    """Move a rejected file to quarantine/ with `<name>.reason.json` beside it; None when it is
    already gone. The reason is written first: when the disk is full the file stays in
    processing/ (the next run moves it on from the ledger), never in quarantine/ unexplained."""
    if stamp_of(claimed.path) is None:
        return None
    target = landing.quarantine / claimed.stored_name
    note = {
        "file": claimed.original_name,
        "stored_as": claimed.stored_name,
        "reason": reason,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "ledger_id": claimed.ledger_id,
        "sha256": claimed.sha256,
        **details,
    }
    reason_path = target.with_name(target.name + ".reason.json")
    write_whole(reason_path, json.dumps(note, indent=2, ensure_ascii=False) + "\n")
    moved = _move(claimed.path, target)
    if moved is None:
        reason_path.unlink(missing_ok=True)
    return moved


def write_whole(path: Path, text: str) -> None:
    """Write a file whole or not at all: through a hidden temporary name, removed again when
    the write fails (a full disk leaves no half file behind)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _move(source: Path, target: Path) -> Path | None:
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return None
    return target


def processing_files(landing: Landing) -> list[Path]:
    """Entries left in processing/ (by this run before a crash, or by a killed run)."""
    with os.scandir(landing.processing) as scanner:
        return sorted(
            landing.processing / entry.name
            for entry in scanner
            if not entry.name.startswith(".")
            and (entry.is_file(follow_symlinks=False) or entry.is_symlink())
        )


def claim_age_s(path: Path) -> float:
    """Seconds since the file was renamed into processing/ (rename updates ctime)."""
    return datetime.now(UTC).timestamp() - path.lstat().st_ctime


# -- what the kernel says arrived -------------------------------------------------------------

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class ArrivalLog:
    """Files of incoming/ (and its folders) the kernel reports finished: closed after writing,
    or renamed into place. Such a file is claimed at once when it is still as the event left it;
    files the log did not see wait to settle (`SettleClock`). Linux inotify through ctypes; where
    it is unavailable the log stays empty and every file settles, a couple of seconds later.
    `wait` also wakes a lingering ingest run on an arrival instead of its next look."""

    def __init__(self, root: Path):
        self.root = root
        self.finished: dict[str, Stamp] = {}
        self.fd = -1
        self.folders: dict[int, str] = {}
        libc_name = ctypes.util.find_library("c")
        try:
            self._libc = ctypes.CDLL(libc_name or "libc.so.6", use_errno=True)
            self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            self.fd = -1
        if self.fd >= 0:
            self._watch(root, "", 1)

    @property
    def active(self) -> bool:
        return self.fd >= 0

    def _watch(self, folder: Path, prefix: str, depth: int) -> None:
        mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE_SELF
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), mask)
        if wd < 0:
            return  # out of watches, or the folder went away: its files settle instead
        self.folders[wd] = prefix
        if depth >= MAX_DEPTH:
            return
        try:
            with os.scandir(folder) as scanner:
                for item in scanner:
                    if item.is_dir(follow_symlinks=False) and not item.name.startswith("."):
                        self._watch(Path(item.path), prefix + item.name + "/", depth + 1)
        except OSError:
            return

    def poll(self) -> None:
        """Take in the events waiting (never blocks)."""
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw_name = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = os.fsdecode(raw_name.rstrip(b"\x00"))
                self._event(wd, mask, name)

    def _event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            return  # events were lost: those files settle instead
        prefix = self.folders.get(wd)
        if mask & (IN_IGNORED | IN_DELETE_SELF):
            self.folders.pop(wd, None)
            return
        if prefix is None or not name:
            return
        rel = prefix + name
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO) and not name.startswith("."):
                depth = rel.count("/") + 2
                if depth <= MAX_DEPTH:
                    self._watch(self.root / rel, rel + "/", depth)
            return
        if mask & (IN_CLOSE_WRITE | IN_MOVED_TO) and not is_partial_name(name):
            stamp = stamp_of(self.root / rel)
            if stamp is not None:
                self.finished[rel] = stamp

    def announced(self, rel: str) -> Stamp | None:
        self.poll()
        return self.finished.get(rel)

    def forget(self, rel: str) -> None:
        self.finished.pop(rel, None)

    def wait(self, timeout_s: float) -> bool:
        """Block until an event arrives or `timeout_s` passes; True on an event."""
        if self.fd < 0:
            time.sleep(max(timeout_s, 0.0))
            return False
        ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        return bool(ready)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
