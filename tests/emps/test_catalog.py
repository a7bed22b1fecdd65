"""The catalog file: what a malformed one is told, how a version 1 file is read and migrated,
and that the YAML written for a catalog reads back as the same catalog."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from emps.catalog import CatalogError, catalog_yaml, parse_catalog
from emps.commands.catalog import app

FLEETS = Path(__file__).parents[1] / "fleets"

VERSION_1 = """\
version: 1
sensors:
  oil_temp: {unit: degC, valid_range: [-40, 200], required: true}
  shaft_speed: {unit: rpm, valid_range: [0, 6000]}
equipment_types:
  gearbox:
    description: Reduction gearbox
    id_prefix: GBX
    normal:
      oil_temp: [40, 90]
  compressor:
    normal: {shaft_speed: [1000, 3000]}
"""


@pytest.mark.parametrize(
    ("old", "new", "refusal"),
    [
        (
            "  chiller:\n    description: Water chiller\n",
            "  chiller: water chiller\n  old_chiller:\n    description: Water chiller\n",
            "equipment_types.chiller: a mapping of description, id_prefix, channels, clock, "
            "features",
        ),
        (
            "    clock: {kind: time, interval: 1 h}\n    channels:\n      coolant_temp",
            "    clock: 5\n    channels:\n      coolant_temp",
            "equipment_types.chiller.clock: a mapping of kind, interval, unit, start",
        ),
        (
            "      coolant_temp: [4, 12]\n",
            "      coolant_temp: {4: [4, 12]}\n",
            "equipment_types.chiller.channels.coolant_temp: unknown field(s) 4",
        ),
        ("version: 2\n", "2: true\nversion: 2\n", "unknown top-level field(s) 2"),
    ],
    ids=["type", "clock", "numeric-band-key", "numeric-top-level-key"],
)
def test_a_type_or_clock_that_is_not_a_mapping_is_refused_with_its_line(old, new, refusal):
    """An equipment type or a clock written as a single value, or a field YAML reads as a
    number, is refused naming the file, the line and the field, not with a Python error."""
    text = (FLEETS / "hourly.yaml").read_text()
    assert text.count(old) == 1
    broken = text.replace(old, new)
    line = broken.splitlines().index(new.splitlines()[0]) + 1
    with pytest.raises(CatalogError) as refused:
        parse_catalog(broken, Path("fleet.yaml"))
    assert str(refused.value) == f"fleet.yaml line {line}: {refusal}"


@pytest.mark.parametrize("name", ["hourly", "turbofan"])
def test_the_written_catalog_reads_back_as_the_same_catalog(name):
    """What `emps catalog migrate` writes for a catalog (wall-time clocks in durations, a
    counter clock in its own unit) reads back as the same channels and equipment types."""
    catalog = parse_catalog((FLEETS / f"{name}.yaml").read_text(), Path(f"{name}.yaml"))
    written = parse_catalog(catalog_yaml(catalog), Path("written.yaml"))
    assert written.channels == catalog.channels
    assert written.equipment_types == catalog.equipment_types


def test_a_version_1_catalog_is_read_with_a_note_and_migrated(settings, tmp_path):
    """A version 1 file is read as version 2 (every type has every sensor, with its band where
    the file gives one) with a note; `emps catalog check` shows the note and
    `emps catalog migrate --write` rewrites the file as version 2, keeping the original."""
    catalog = parse_catalog(VERSION_1, Path("old.yaml"))
    assert catalog.notes and catalog.notes[0].startswith("version 1 catalog read as version 2")
    assert catalog.equipment_types["gearbox"].channels == {
        "oil_temp": (40.0, 90.0),
        "shaft_speed": None,
    }
    assert catalog.equipment_types["compressor"].channels == {
        "oil_temp": None,
        "shaft_speed": (1000.0, 3000.0),
    }

    path = tmp_path / "old.yaml"
    path.write_text(VERSION_1)
    checked = CliRunner().invoke(app, ["check", str(path)])
    assert checked.exit_code == 0, checked.output
    assert "note: version 1 catalog read as version 2" in checked.output
    assert f"ok: {path}" in checked.output

    migrated = CliRunner().invoke(app, ["migrate", str(path), "--write"])
    assert migrated.exit_code == 0, migrated.output
    assert (tmp_path / "old.yaml.v1").read_text() == VERSION_1
    rewritten = parse_catalog(path.read_text(), path)
    assert rewritten.notes == []
    assert rewritten.channels == catalog.channels
    assert rewritten.equipment_types == catalog.equipment_types


def test_a_version_1_type_that_is_not_a_mapping_is_refused_by_check(settings, tmp_path):
    """`emps catalog check` on a version 1 file whose type is a single value refuses it naming
    the line and field, and exits with an error."""
    path = tmp_path / "old.yaml"
    path.write_text(
        VERSION_1.replace("  compressor:\n    normal:", "  compressor: 3\n  x:\n    normal:")
    )
    checked = CliRunner().invoke(app, ["check", str(path)])
    assert checked.exit_code == 1
    assert "refused: old.yaml line 11: equipment_types.compressor: a mapping of" in " ".join(
        checked.output.split()
    )
