"""`emps simulate live`: drop files in the landing zone, and events recorded as they happen."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emps.catalog import Catalog
from emps.cli import app
from emps.settings import Settings
from emps.simulator.drops import DEFECTS, UNKNOWN_EQUIPMENT_ID
from emps.simulator.fleet import DAY_S, Fleet
from emps.simulator.live import LiveSimulator

TS = datetime(2026, 6, 1, 14, 30, tzinfo=UTC)


def _parse(path: Path) -> list[dict]:
    """Read a drop file back the way a consumer would, values as floats or None."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    text = data.decode()
    if ".csv" in path.name:
        records = [
            {k: (v if v != "" else None) for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(text))
        ]
    elif ".ndjson" in path.name:
        records = [json.loads(line) for line in text.splitlines() if line]
    else:
        records = json.loads(text)
    parsed = []
    for record in records:
        stamp = record["timestamp"]
        if isinstance(stamp, int) or str(stamp).isdigit():
            when = datetime.fromtimestamp(int(stamp), UTC)
        else:
            when = datetime.fromisoformat(stamp)
            assert when.tzinfo is not None, f"{path.name}: timestamp without offset {stamp!r}"
        values = {
            k: (None if v is None else float(v))
            for k, v in record.items()
            if k not in ("equipment_id", "timestamp")
        }
        parsed.append({"equipment_id": record["equipment_id"], "timestamp": when, **values})
    return parsed


def test_live_once_writes_atomic_files_of_each_format_that_parse_back(
    tmp_path: Path, catalog: Catalog
):
    """One interval gives one well-formed file per reporting device, in every format, same readings."""
    fleet = Fleet(catalog, 60, 42)
    simulator = LiveSimulator(fleet, tmp_path, 60, use_database=False)
    tick = simulator.tick(TS)
    expected = {r["equipment_id"]: r for r in simulator.readings_at(TS)}
    assert len(tick.files) == len(expected) > 50
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f.path.name for f in tick.files)  # no .part or hidden leftovers
    assert {(f.format, f.gzipped) for f in tick.files} == {
        (fmt, gz) for fmt in ("csv", "json", "ndjson") for gz in (False, True)
    }
    for drop in tick.files:
        (record,) = _parse(drop.path)
        want = expected[record["equipment_id"]]
        assert record["timestamp"] == TS
        assert set(record) == {"equipment_id", "timestamp", *fleet.sensors}
        assert all(record[s] == want[s] for s in fleet.sensors), drop.path.name
        assert drop.path.name.startswith(record["equipment_id"])


def test_per_site_gateways_batch_their_devices(tmp_path: Path, catalog: Catalog):
    """--per-site writes one file per site gateway holding all its devices' readings."""
    fleet = Fleet(catalog, 60, 42)
    tick = LiveSimulator(fleet, tmp_path, 60, per_site=True, use_database=False).tick(TS)
    sites = {e.site for e in fleet.equipment}
    assert len(tick.files) <= len(sites) and all(f.path.name.startswith("gw-") for f in tick.files)
    records = [r for f in tick.files for r in _parse(f.path)]
    assert len(records) == tick.rows
    for record in records:
        assert record["equipment_id"] in fleet.by_id


def test_bad_share_injects_malformed_files(tmp_path: Path, catalog: Catalog):
    """--bad-share 1 makes every file malformed, with the defects ingest must survive."""
    fleet = Fleet(catalog, 120, 42)
    tick = LiveSimulator(fleet, tmp_path, 60, bad_share=1.0, use_database=False).tick(TS)
    defects = {f.defect for f in tick.files}
    assert None not in defects and defects <= set(DEFECTS) and len(defects) >= 6
    for drop in tick.files:
        if drop.defect == "empty_file" and not drop.gzipped:
            assert drop.path.stat().st_size == 0
        elif drop.defect == "truncated":
            # Either unreadable, or (a CSV cut mid-row) its last row lacks fields.
            try:
                last = _parse(drop.path)[-1]
            except (ValueError, TypeError, EOFError, KeyError):
                continue
            assert last.get(fleet.sensors[-1]) is None
        elif drop.defect == "unknown_equipment":
            assert _parse(drop.path)[0]["equipment_id"] == UNKNOWN_EQUIPMENT_ID
        elif drop.defect == "missing_column":
            with pytest.raises(KeyError):
                _parse(drop.path)
    clean = LiveSimulator(fleet, tmp_path / "clean", 60, bad_share=0.0, use_database=False)
    assert all(f.defect is None for f in clean.tick(TS).files)


def test_live_records_failures_and_repairs_as_they_happen(
    db: Settings, owner_conn, tmp_path: Path, catalog: Catalog
):
    """A failure during live running lands in raw.failure_events; its repair closes it later."""
    fleet = Fleet(catalog, 30, 42)
    after = int(TS.timestamp())
    episode = min(
        (
            ep
            for e in fleet.equipment
            for ep in e.episodes_until(after + 400 * DAY_S)
            if not ep.prevented
        ),
        key=lambda ep: ep.failure_s if ep.failure_s > after else float("inf"),
    )
    simulator = LiveSimulator(fleet, tmp_path, 60, settings=db)
    at_failure = datetime.fromtimestamp((episode.failure_s // 60 + 1) * 60, UTC)
    tick = simulator.tick(at_failure)
    assert episode.equipment_id not in {f.path.name.split("-2")[0] for f in tick.files}
    row = owner_conn.execute(
        "select failure_mode, repaired_at from raw.failure_events "
        "where equipment_id = %s and source = 'simulator'",
        (episode.equipment_id,),
    ).fetchone()
    assert row == (episode.mode, None)
    registered = owner_conn.execute(
        "select count(*) from raw.equipment where source = 'simulator'"
    ).fetchone()[0]
    assert registered == 30

    at_repair = datetime.fromtimestamp((episode.repaired_s // 60 + 1) * 60, UTC)
    simulator.tick(at_repair)
    repaired = owner_conn.execute(
        "select repaired_at from raw.failure_events "
        "where equipment_id = %s and source = 'simulator'",
        (episode.equipment_id,),
    ).fetchone()[0]
    assert repaired == episode.repaired_at
    task = owner_conn.execute(
        "select task_type, status from ops.maintenance_tasks "
        "where equipment_id = %s and task_type <> 'preventive'",
        (episode.equipment_id,),
    ).fetchone()
    assert task == ("repair", "completed")
    assert any(
        f.path.name.startswith(episode.equipment_id)
        for f in simulator.tick(at_repair + timedelta(minutes=5)).files
    )


def test_live_command_once_writes_into_the_landing_zone(settings: Settings):
    """`emps simulate live --once` drops files into <EMPS_HOME>/landing/incoming and exits."""
    incoming = settings.landing_dir / "incoming"
    before = set(incoming.glob("*")) if incoming.exists() else set()
    result = CliRunner().invoke(
        app, ["simulate", "live", "--equipment", "5", "--once", "--no-db", "--seed", "9"]
    )
    assert result.exit_code == 0, result.output
    new = set(incoming.glob("*")) - before
    assert 1 <= len(new) <= 5
    assert not [p for p in incoming.iterdir() if p.name.startswith(".")]
    for path in new:
        path.unlink()
