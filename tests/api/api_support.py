"""Helpers the API tests import: the API served by uvicorn in its own process, the settings of
its model registry, and polling. A module of its own, not conftest: `from conftest import ...`
resolves to whichever conftest was imported first when several test folders run together."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from emps.processes import ServerDidNotStart, start, stop, wait_until_answers
from emps.settings import Settings

API_ENV = {
    # Small limits so the refusals are reached with few requests; a token every 5 s, so the
    # rate test's 21 requests see none come back however loaded the machine is.
    "EMPS_API_MAX_BODY_BYTES": "4096",
    "EMPS_API_RATE_PER_KEY": "0.2",
    "EMPS_API_RATE_BURST": "12",
    # A revoked key is refused at once; drop files are handed to ingest quickly.
    "EMPS_API_KEY_CACHE_S": "0",
    "EMPS_API_DROP_INTERVAL_S": "0.2",
}


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, key: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # Generous: the first prediction loads the model's code and the champion, which on a
        # loaded 2-core machine takes over 30 s; how fast it is is the api bench's to measure.
        return httpx.Client(base_url=self.url, headers=headers, timeout=180, **kw)


def start_api(settings: Settings, port: int, log: Path) -> ApiServer:
    """The API as `emps api` serves it, on `port`, once /health answers; the caller stops it."""
    env = {**os.environ, **API_ENV, "EMPS_API_PORT": str(port)}
    process = start([sys.executable, "-m", "emps.api"], log, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers("the API", process, f"{url}/health", log, timeout_s=120)
    except ServerDidNotStart:
        stop(process)
        raise
    return ApiServer(url, process, log)


def model_settings(settings: Settings) -> Settings:
    """Where the API's predictions find their champion: a registry of this session's own and a
    feature table the predict tests fill (tests/api/test_people_api.py)."""
    root = settings.home / "api-mlflow"
    return settings.replace(
        ml={
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifact_root": root / "artifacts",
            "model_name": "api-test-model",
            "features_relation": "api_test.features",
            "examples_relation": "api_test.features",
            "n_estimators": 20,
            "n_jobs": 1,
            "min_samples_leaf": 20,
            "sample_minutes": 60,
        }
    )


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")
