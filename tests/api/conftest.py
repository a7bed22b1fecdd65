"""API test fixtures: the API served by uvicorn in its own process on a free port, against the
session's PostgreSQL and landing zone; devices with keys; readings built from the catalog."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_support import API_ENV, ApiServer, model_settings, start_api

from emps.api.devices import add_device
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml import synthetic
from emps.processes import free_port
from emps.settings import Settings, variables


@pytest.fixture(scope="session")
def champion(database: Settings):
    """A champion trained on synthetic features, in the registry the API reads; the examples."""
    from emps.ml import registry
    from emps.ml.train import train_and_register

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
    fields = ("mlflow_tracking_uri", "mlflow_artifact_root", "model_name", "features_relation")
    for variable in variables():
        if variable.area == "ml" and variable.field in fields:
            API_ENV[variable.name] = str(variable.value(ml))
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
