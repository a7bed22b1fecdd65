"""Drop folders bound like device keys: a registered device's folder in incoming/ reports only
the equipment its device is bound to; other folders and the top of incoming/ are not bound."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from emps import actions
from emps.api.devices import add_device, bind_equipment
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.ingest.pipeline import ingest_landing
from emps.settings import Settings
from tests.ingest.corpus import Readings

UNITS = ["unit-bound", "unit-other"]


@pytest.fixture
def fleet(ingest_db: Settings) -> Readings:
    """Two registered machines and the catalog's readings for them (6 h ago onwards)."""
    catalog = load_catalog(ingest_db.catalog_path)
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, %s, 'north' from unnest(%s::text[]) id",
            (catalog.type_names[0], UNITS),
        )
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    return Readings(catalog, base, UNITS)


@pytest.fixture
def device(ingest_db: Settings) -> str:
    """A device (unique name) bound to the first machine only."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        add_device(conn, name, [UNITS[0]], actor="cli:test")
    return name


def _drop(landing: Landing, rel: str, data: bytes) -> None:
    path = landing.incoming / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_device_folder_quarantines_rows_for_equipment_its_device_is_not_bound_to(
    fleet: Readings, device: str, landing: Landing, ingest_db: Settings, query
):
    """In incoming/<device>/, a row for equipment the device is not bound to is quarantined with
    the device, row and field named, and audited; the file's bound rows load."""
    rows = [fleet.row(0), fleet.row(1, unit=1), fleet.row(2)]
    _drop(landing, f"{device}/drop.csv", fleet.csv(rows))
    [outcome] = ingest_landing(ingest_db).files
    assert (outcome.status, outcome.rows_loaded, outcome.rows_quarantined) == ("partial", 2, 1)
    [(row_number, equipment_id, reasons)] = query(
        "select row_number, equipment_id, reasons from raw.quarantined_rows"
    )
    assert (row_number, equipment_id) == (2, UNITS[1])
    assert f"equipment_id '{UNITS[1]}' is not bound to device '{device}'" in reasons[0]
    assert f"emps devices bind {device} --add {UNITS[1]}" in reasons[0]
    [(error,)] = query("select error from raw.ingest_files")
    assert f"row 2: equipment_id '{UNITS[1]}' is not bound to device '{device}'" in error
    assert query(
        "select equipment_id, count(*) from raw.sensor_readings group by 1 order by 1"
    ) == [(UNITS[0], 2)]
    [(actor, target, details)] = query(
        "select actor, target_id, details from ops.audit_log "
        "where action = 'ingest.unbound_equipment'"
    )
    assert (actor, target) == ("emps-ingest", device)
    assert details["file"] == f"{device}/drop.csv"
    assert (details["rows"], details["equipment_ids"]) == ([2], [UNITS[1]])


def test_files_outside_a_registered_devices_folder_are_not_bound(
    fleet: Readings, device: str, landing: Landing, ingest_db: Settings, query
):
    """A file at the top of incoming/, or in a folder that names no registered device (a site
    folder holding the device's name deeper down included), loads every registered machine."""
    _drop(landing, "top.csv", fleet.csv([fleet.row(0, unit=1)]))
    _drop(landing, "north/drop.csv", fleet.csv([fleet.row(1, unit=1)]))
    _drop(landing, f"north/{device}/drop.csv", fleet.csv([fleet.row(2, unit=1)]))
    report = ingest_landing(ingest_db)
    assert sorted(f.status for f in report.files) == ["loaded"] * 3
    assert query("select count(*) from raw.sensor_readings where equipment_id = %s", (UNITS[1],))
    assert query("select count(*) from raw.sensor_readings") == [(3,)]
    assert query("select count(*) from ops.audit_log where action like 'ingest.%%'") == [(0,)]


def test_unknown_equipment_in_a_device_folder_is_not_registered_on_its_say_so(
    fleet: Readings, device: str, landing: Landing, ingest_db: Settings, query
):
    """With EMPS_INGEST_UNKNOWN_EQUIPMENT=register, an id the device is not bound to is refused
    for its binding, not added to the registry."""
    registering = ingest_db.replace(ingest={"unknown_equipment": "register"})
    _drop(landing, f"{device}/drop.csv", fleet.csv([fleet.row(0, equipment_id="unit-stray")]))
    [outcome] = ingest_landing(registering).files
    assert outcome.status == "quarantined"
    assert "not bound to device" in outcome.error
    assert query("select count(*) from raw.equipment where equipment_id = 'unit-stray'") == [(0,)]


def test_a_row_refused_for_its_binding_loads_when_retried_after_the_device_is_bound(
    fleet: Readings, device: str, landing: Landing, ingest_db: Settings, admin, query
):
    """An admin's retry of a row refused for the device's binding refuses it again while the
    binding stands, and loads it once the device is bound to its equipment."""
    _drop(landing, f"{device}/drop.csv", fleet.csv([fleet.row(0), fleet.row(1, unit=1)]))
    ingest_landing(ingest_db)
    [(row_id,)] = query("select id from raw.quarantined_rows")
    assert actions.retry_quarantined(admin, [row_id], "asked twice", ingest_db) == 1
    assert ingest_landing(ingest_db).released_rows == 0
    [(reasons, resolution)] = query("select reasons, resolution from raw.quarantined_rows")
    assert "not bound to device" in reasons[0] and resolution is None
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        bind_equipment(conn, device, [UNITS[1]], [], actor="cli:test")
    assert actions.retry_quarantined(admin, [row_id], "bound now", ingest_db) == 1
    assert ingest_landing(ingest_db).released_rows == 1
    assert query("select resolution from raw.quarantined_rows") == [("released",)]
    assert query(
        "select count(*) from raw.sensor_readings where equipment_id = %s", (UNITS[1],)
    ) == [(1,)]
