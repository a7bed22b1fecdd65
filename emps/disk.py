"""Free disk space where the platform writes: its home (landing zone, logs, MLflow artifacts,
reports) and the embedded PostgreSQL's data. What the operations alert, the metric and ingest's
pause below EMPS_INGEST_MIN_FREE_MB read."""

from __future__ import annotations

import shutil
from pathlib import Path

from emps.settings import Settings

MB = 1024 * 1024


def free_bytes(settings: Settings) -> int:
    """The least free space among the file systems holding the home and the database's data."""
    paths = [settings.home, settings.pg_dir]
    free = []
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
        free.append(shutil.disk_usage(existing).free)
    return min(free)
