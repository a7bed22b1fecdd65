"""API test fixtures: the API served by uvicorn in its own process on a free port, against the
session's PostgreSQL and landing zone; devices with keys; readings built from the catalog."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from ports import free_port

from emps.api.devices import add_device
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.settings import PROJECT_ROOT, Settings


def _module(name: str, relative: str):
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The ML tests' synthetic features, reused as they are.
synthetic = _module("ml_synthetic", "tests/ml/synthetic.py")

API_ENV = {
    # Small limits so the refusals are reached with few requests.
    "EMPS_API_MAX_BODY_BYTES": "4096",
    "EMPS_API_RATE_PER_KEY": "2",
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
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)


def start_api(settings: Settings, port: int, log: Path) -> ApiServer:
    env = {**os.environ, **API_ENV, "EMPS_API_PORT": str(port)}
    handle = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "emps.api"], env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the API exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return ApiServer(url, process, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the API did not answer within 120 s: {log.read_text()[-3000:]}")


def model_settings(settings: Settings) -> Settings:
    """Where the API's predictions find their champion: a registry of this session's own and a
    feature table the predict tests fill (tests/api/test_people_api.py)."""
    root = settings.home / "api-mlflow"
    return settings.model_copy(
        update={
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifact_root": root / "artifacts",
            "model_name": "api-test-model",
            "ml_features_relation": "api_test.features",
            "ml_examples_relation": "api_test.features",
            "ml_n_estimators": 20,
            "ml_n_jobs": 1,
            "ml_min_samples_leaf": 20,
            "ml_sample_minutes": 60,
        }
    )


@pytest.fixture(scope="session")
def champion(database: Settings):
    """A champion trained on synthetic features, in the registry the API reads; the examples."""
    from ml import registry
    from ml.train import train_and_register

    settings = model_settings(database)
    examples, failures = synthetic.training_examples(
        load_catalog(settings.catalog_path), equipment=30, days=100, step_hours=4
    )
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "tester", settings, examples, failures)
    return settings, examples


@pytest.fixture(scope="session")
def api(database: Settings) -> Iterator[ApiServer]:
    ml = model_settings(database)
    for name in (
        "mlflow_tracking_uri",
        "mlflow_artifact_root",
        "model_name",
        "ml_features_relation",
    ):
        API_ENV[f"EMPS_{name.upper()}"] = str(getattr(ml, name))
    server = start_api(database, free_port(), database.home / "api-test.log")
    yield server
    server.process.terminate()
    server.process.wait(timeout=30)


@pytest.fixture
def api_db(db: Settings) -> Settings:
    """An emptied database with this module's equipment registered."""
    with connect(Role.OWNER, db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, %s, 'test' from unnest(%s::text[]) id",
            (Fleet.of(db).type_name, Fleet.of(db).equipment),
        )
    return db


@dataclass
class Fleet:
    """Equipment of one wall-clock type of the catalog and valid readings for it."""

    type_name: str
    channels: dict[str, tuple[float, float]]
    equipment: list[str]

    @classmethod
    def of(cls, settings: Settings) -> Fleet:
        catalog = load_catalog(settings.catalog_path)
        name, etype = next(
            (n, t) for n, t in catalog.equipment_types.items() if t.clock.kind == "time"
        )
        channels = {c: catalog.channels[c].valid_range for c in etype.channels}
        return cls(name, channels, [f"APITEST-{i}" for i in range(1, 5)])

    def reading(self, equipment_id: str, minute: int = 0, **values: Any) -> dict[str, Any]:
        ts = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        row: dict[str, Any] = {
            "equipment_id": equipment_id,
            "timestamp": (ts + timedelta(minutes=minute)).isoformat(),
        }
        row.update({c: round((low + high) / 2, 3) for c, (low, high) in self.channels.items()})
        row.update(values)
        return row


@pytest.fixture
def fleet(api_db: Settings) -> Fleet:
    return Fleet.of(api_db)


@dataclass
class NewDevice:
    device_id: str
    key: str
    equipment: list[str]


@pytest.fixture
def device(api_db: Settings, fleet: Fleet) -> Callable[..., NewDevice]:
    """Adds a device (unique name) bound to the given equipment (default: the first two)."""

    def make(equipment: list[str] | None = None) -> NewDevice:
        equipment = equipment or fleet.equipment[:2]
        name = f"dev-{uuid.uuid4().hex[:10]}"
        with connect(Role.OWNER, api_db, autocommit=True) as conn:
            new = add_device(conn, name, equipment, actor="cli:test")
        return NewDevice(name, new.key, equipment)

    return make


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")
