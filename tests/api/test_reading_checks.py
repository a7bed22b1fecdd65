"""The API's quick check of plain readings says what ingest's typing says, word for word."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from emps.api.readings import _quick_problems, _typed_problems, check_readings
from emps.catalog import load_catalog
from emps.settings import Settings

FLEETS = Path(__file__).resolve().parents[1] / "fleets"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def readings(catalog) -> list[dict]:
    """Plain readings of every shape the quick check reads: in range, out of range at each
    end, too far ahead, too old, a negative usage count, a null value, a missing time."""
    channels = [c for c in catalog.channels.values() if c.name != "cycle"]
    counter = any(t.clock.kind == "counter" for t in catalog.equipment_types.values())
    mid = {c.name: sum(c.valid_range) / 2 for c in channels}
    base = {"equipment_id": "UNIT-1", "timestamp": "2026-12-06T11:00:00Z", **mid}
    if counter:
        base["cycle"] = 12
    first, last = channels[0], channels[-1]
    rows = [
        base,
        {**base, "timestamp": "2026-12-06T13:00:00.250+02:00"},
        {**base, first.name: first.valid_range[1] + 1},
        {**base, last.name: int(last.valid_range[0]) - 5},
        {**base, "timestamp": "2026-12-06T18:30:00+00:00"},
        {**base, "timestamp": "2019-01-01T00:00:00Z"},
        {**base, first.name: None},
        {k: v for k, v in base.items() if k != "timestamp"},
    ]
    if counter:
        rows.append({**base, "cycle": -3})
    return rows


@pytest.mark.parametrize("name", ["turbofan", "hourly"])
def test_the_quick_check_and_ingests_typing_name_the_same_problems(name):
    """Every reading the quick check reads gets the problems (row, field and words) that the
    pandas typing ingest uses would give it."""
    catalog = load_catalog(FLEETS / f"{name}.yaml")
    settings = Settings(catalog_path=FLEETS / f"{name}.yaml")
    records = readings(catalog)
    channels = {c.name: c for c in catalog.channels.values()}
    quick = _quick_problems(records, channels, catalog, settings, NOW)
    assert quick is not None
    assert len(quick) >= 5
    typed = _typed_problems(records, channels, catalog, settings, NOW)

    def key(problems):
        return sorted((p.row, p.field, p.message) for p in problems)

    assert key(quick) == key(typed)


@pytest.mark.parametrize(
    "odd",
    [
        {"timestamp": "2026-12-06 11:00:00"},  # naive, a space
        {"timestamp": 1796554800},  # an epoch
        {"equipment_id": " UNIT-1 "},
        {"__channel__": "71.5"},  # a number as text
        {"__channel__": True},
    ],
)
def test_a_reading_in_another_shape_is_read_the_way_ingest_reads_it(odd):
    """A reading the quick check does not read (text numbers, epochs, naive times, padded ids,
    booleans) goes through ingest's own typing, and its problems are those."""
    catalog = load_catalog(FLEETS / "hourly.yaml")
    settings = Settings(catalog_path=FLEETS / "hourly.yaml")
    channel = next(iter(catalog.channels.values()))
    records = readings(catalog)
    odd = {channel.name if k == "__channel__" else k: v for k, v in odd.items()}
    records[0] = {**records[0], **odd}
    channels = {c.name: c for c in catalog.channels.values()}
    assert _quick_problems(records, channels, catalog, settings, NOW) is None
    _, problems = check_readings(records, catalog, settings, NOW)
    expected = _typed_problems(records, channels, catalog, settings, NOW)
    assert {(p.row, p.field, p.message) for p in expected} <= {
        (p.row, p.field, p.message) for p in problems
    }
    if isinstance(odd.get(channel.name), bool):
        assert any(p.row == 1 and p.field == channel.name for p in problems)
