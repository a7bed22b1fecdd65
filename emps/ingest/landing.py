"""The landing zone on disk: which files wait, claiming them, and where they go afterwards.

incoming/ -> processing/ (claimed, renamed to a safe unique name) -> archive/YYYY/MM/DD/ or
quarantine/ (with `<name>.reason.json`). Moves are renames inside one directory tree, so each
step is atomic: a file is never seen half-moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

# A device still writing a file uses one of these names; we wait for its final rename.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload")
SAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SAFE_NAME = 120


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


@dataclass
class ClaimedFile:
    """A file moved into processing/ by this run (or taken back from a dead one)."""

    original_name: str
    path: Path
    size_bytes: int
    received_at: datetime
    sha256: str = ""
    ledger_id: int | None = None

    @property
    def stored_name(self) -> str:
        return self.path.name


def is_partial_name(name: str) -> bool:
    """True for names a writer uses before its final rename (dot files, *.part, *.tmp)."""
    lower = name.lower()
    return name.startswith(".") or lower.endswith(PARTIAL_SUFFIXES)


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


def waiting_files(landing: Landing, limit: int) -> list[Path]:
    """Finished regular files in incoming/, oldest first, at most `limit`.

    Symlinks and directories are ignored: a link could point anywhere on the machine.
    """
    entries = []
    with os.scandir(landing.incoming) as scan:
        for entry in scan:
            if is_partial_name(entry.name):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            entries.append((info.st_mtime_ns, entry.name))
    entries.sort()
    return [landing.incoming / name for _, name in entries[:limit]]


def claim(landing: Landing, path: Path) -> ClaimedFile | None:
    """Move one incoming file to processing/ under a unique safe name; None if another run won."""
    info = path.lstat()
    token = secrets.token_hex(6)
    target = landing.processing / f"{token}-{safe_name(path.name)}"
    try:
        os.rename(path, target)
    except FileNotFoundError:
        return None
    return ClaimedFile(
        original_name=printable_name(path.name),
        path=target,
        size_bytes=info.st_size,
        received_at=datetime.fromtimestamp(info.st_mtime, UTC),
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def archive(landing: Landing, claimed: ClaimedFile, when: datetime | None = None) -> Path | None:
    """Move a finished file to archive/YYYY/MM/DD/; None when it is already gone."""
    when = when or datetime.now(UTC)
    folder = landing.archive / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"
    folder.mkdir(parents=True, exist_ok=True)
    return _move(claimed.path, folder / claimed.stored_name)


def quarantine(landing: Landing, claimed: ClaimedFile, reason: str, **details) -> Path | None:
    """Move a rejected file to quarantine/ and write `<name>.reason.json` beside it."""
    target = landing.quarantine / claimed.stored_name
    moved = _move(claimed.path, target)
    if moved is None:
        return None
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
    tmp = reason_path.with_name("." + reason_path.name + ".tmp")
    tmp.write_text(json.dumps(note, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, reason_path)
    return moved


def _move(source: Path, target: Path) -> Path | None:
    try:
        os.replace(source, target)
    except FileNotFoundError:
        return None
    return target


def processing_files(landing: Landing) -> list[Path]:
    """Files left in processing/ (by this run before a crash, or by a killed run)."""
    with os.scandir(landing.processing) as scan:
        return sorted(
            landing.processing / entry.name
            for entry in scan
            if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".")
        )


def claim_age_s(path: Path) -> float:
    """Seconds since the file was renamed into processing/ (rename updates ctime)."""
    return datetime.now(UTC).timestamp() - path.lstat().st_ctime
