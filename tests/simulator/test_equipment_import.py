"""`emps equipment import FILE.csv`: a real fleet registered, validated against the catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from emps.catalog import Catalog
from emps.cli import app
from emps.db import Role, connect
from emps.equipment import EquipmentImportError, import_equipment_csv, read_equipment_csv
from emps.settings import Settings

GOOD = """equipment_id,equipment_type,site,commissioned_at,unit
GEN-9001,generator,north-ridge,2021-03-01,1st Signal Regiment
RAD-9001,radar,harbour-depot,2022-07-15T08:00:00+02:00,
PMP-9001,pump,harbour-depot,2019-11-30,3rd Logistics Battalion
"""


def test_import_registers_and_then_updates_equipment(db: Settings, owner_conn, tmp_path: Path):
    """Importing a valid file adds the fleet; importing a changed file updates it in place."""
    path = tmp_path / "fleet.csv"
    path.write_text(GOOD)
    result = CliRunner().invoke(app, ["equipment", "import", str(path)])
    assert result.exit_code == 0, result.output
    assert "3 equipment added, 0 updated" in result.output
    rows = owner_conn.execute(
        "select equipment_id, equipment_type, site, unit, source from raw.equipment "
        "order by equipment_id"
    ).fetchall()
    assert rows == [
        ("GEN-9001", "generator", "north-ridge", "1st Signal Regiment", "import"),
        ("PMP-9001", "pump", "harbour-depot", "3rd Logistics Battalion", "import"),
        ("RAD-9001", "radar", "harbour-depot", None, "import"),
    ]
    path.write_text(GOOD.replace("GEN-9001,generator,north-ridge", "GEN-9001,generator,air-wing"))
    result = CliRunner().invoke(app, ["equipment", "import", str(path)])
    assert "0 equipment added, 3 updated" in result.output
    site = owner_conn.execute(
        "select site from raw.equipment where equipment_id = 'GEN-9001'"
    ).fetchone()[0]
    assert site == "air-wing"


def test_unknown_type_is_rejected_naming_row_and_field(db: Settings, owner_conn, tmp_path: Path):
    """A type missing from the catalog fails the whole import with the row, field and known types."""
    path = tmp_path / "fleet.csv"
    path.write_text(GOOD + "TNK-0001,tank,forward-camp,2020-01-01,\n")
    result = CliRunner().invoke(app, ["equipment", "import", str(path)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert "fleet.csv" in output
    assert "row 5, field 'equipment_type': 'tank' is not an equipment type" in output
    assert "generator" in output
    assert owner_conn.execute("select count(*) from raw.equipment").fetchone()[0] == 0


def test_every_bad_field_is_reported(tmp_path: Path, catalog: Catalog, db: Settings):
    """Bad ids, duplicates, empty sites, bad dates and a missing column are each named."""
    path = tmp_path / "bad.csv"
    path.write_text(
        "equipment_id,equipment_type,site,commissioned_at\n"
        "bad id!,pump,north-ridge,2020-01-01\n"
        "PMP-1,pump,,2020-01-01\n"
        "PMP-1,pump,north-ridge,first of may\n"
        "PMP-2,pump,north-ridge,2999-01-01\n"
    )
    with pytest.raises(EquipmentImportError) as caught:
        read_equipment_csv(path, catalog)
    problems = caught.value.problems
    assert any(p.startswith("row 2, field 'equipment_id'") for p in problems)
    assert any(p.startswith("row 3, field 'site'") for p in problems)
    assert any(
        "row 4, field 'equipment_id': 'PMP-1' already appears in row 3" in p for p in problems
    )
    assert any(p.startswith("row 4, field 'commissioned_at'") for p in problems)
    assert any("row 5, field 'commissioned_at'" in p and "future" in p for p in problems)

    path.write_text("equipment_id,site,commissioned_at\nPMP-1,north-ridge,2020-01-01\n")
    with (
        connect(Role.INGEST, db) as conn,
        pytest.raises(EquipmentImportError, match="missing column.*equipment_type"),
    ):
        import_equipment_csv(conn, path, catalog)
