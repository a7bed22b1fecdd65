"""Free disk space where the platform writes: its home (logs, MLflow artifacts, reports), the
landing zone (a drop folder is often a mount of its own) and the embedded PostgreSQL's data.
What the operations alert, the metric and ingest's pause below EMPS_INGEST_MIN_FREE_MB read."""

from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path

from emps.settings import Settings

MB = 1024 * 1024
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
DISK_FULL_SQLSTATE = "53100"  # PostgreSQL's disk_full


@dataclass(frozen=True)
class Space:
    """Free bytes on the file system holding `path`, one of the platform's folders."""

    path: Path
    free: int

    def describe(self) -> str:
        return f"{self.free // MB:,} MB free on the file system of {self.path}"


def watched_paths(settings: Settings) -> list[Path]:
    """The folders whose file systems must not fill up."""
    paths = [settings.home, settings.landing_dir]
    if settings.database.embedded:
        paths.append(settings.pg_dir)
    return paths


def lowest(settings: Settings) -> Space:
    """The watched file system with the least free space (the first named on a tie, so one disk
    holding everything is reported as the home's)."""
    spaces = []
    for path in watched_paths(settings):
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        spaces.append(Space(path, shutil.disk_usage(existing).free))
    return min(spaces, key=lambda space: space.free)


def free_bytes(settings: Settings) -> int:
    """The least free space among the file systems holding the watched folders."""
    return lowest(settings).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means a file system or the database ran out of space (or of quota)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    return getattr(exc, "sqlstate", None) == DISK_FULL_SQLSTATE
