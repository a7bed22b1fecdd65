"""A fresh temporary EMPS home with its own embedded PostgreSQL, migrated, for one bench run.

Every bench script runs by itself on a database nobody else uses:

    with temporary_platform("score", {"EMPS_ML_N_ESTIMATORS": "200"}) as platform:
        ... platform.settings, platform.home ...

The EMPS_* variables of the calling shell are dropped first, so a developer's `.env` or a running
platform can never be benchmarked by mistake. The home is removed afterwards unless `keep=True`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from emps.processes import free_port

ROOT = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:
    from emps.settings import Settings


@dataclass(frozen=True)
class TempPlatform:
    home: Path
    settings: Settings


@contextmanager
def temporary_platform(
    name: str, env: dict[str, str] | None = None, keep: bool = False
) -> Iterator[TempPlatform]:
    """Start an embedded PostgreSQL in a new temporary home, migrate it, stop it afterwards.

    `env` is applied after EMPS_HOME and EMPS_PG_PORT, so it may override them; settings that
    need the home's path can be set in os.environ inside the block and read again with
    `get_settings()`.
    """
    home = Path(tempfile.mkdtemp(prefix=f"emps-bench-{name}-"))
    for key in [k for k in os.environ if k.startswith("EMPS_")]:
        del os.environ[key]
    os.environ.update(
        {
            "EMPS_HOME": str(home),
            "EMPS_PG_PORT": str(free_port()),
            "EMPS_CATALOG_PATH": str(ROOT / "catalog" / "sensors.yaml"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            **(env or {}),
        }
    )
    from emps.db import embedded_server
    from emps.migrate import migrate
    from emps.settings import get_settings

    settings = get_settings()
    server = embedded_server(settings)
    server.start()
    try:
        migrate(settings)
        yield TempPlatform(home, settings)
    finally:
        server.stop(mode="immediate")
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
