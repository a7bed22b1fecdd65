"""The simulated fleet's physics and plan, checked without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from emps.catalog import Catalog, load_catalog
from emps.simulator.fleet import DAY_S, Fleet
from emps.simulator.live import LiveSimulator

END = datetime(2026, 6, 1, tzinfo=UTC)


def _rows(fleet: Fleet, start: datetime, end: datetime, interval_s: int) -> dict:
    """{(equipment_id, ts): values} of every reading in the window."""
    rows = {}
    for chunk in fleet.chunks(start, end, interval_s, batch=7):
        for i, ts, values in zip(chunk.equipment_index, chunk.ts_s, chunk.values, strict=True):
            rows[(fleet.equipment[i].equipment_id, int(ts))] = values
    return rows


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def test_same_seed_gives_the_same_fleet_and_readings(catalog: Catalog):
    """Two runs with one seed produce identical fleets and readings; another seed differs."""
    start = END - timedelta(days=2)
    first, again, other = Fleet(catalog, 12, 7), Fleet(catalog, 12, 7), Fleet(catalog, 12, 8)
    assert [e.equipment_id for e in first.equipment] == [e.equipment_id for e in again.equipment]
    assert _same(_rows(first, start, END, 600), _rows(again, start, END, 600))
    assert not _same(_rows(first, start, END, 600), _rows(other, start, END, 600))


def test_a_bigger_fleet_keeps_the_smaller_fleets_equipment(catalog: Catalog):
    """Live with --equipment 1000 continues a 200-equipment backfill: the first ids and readings match."""
    small, big = Fleet(catalog, 10, 42), Fleet(catalog, 30, 42)
    assert [e.equipment_id for e in small.equipment] == [e.equipment_id for e in big.equipment[:10]]
    day = (int(END.timestamp()) - int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())) // DAY_S
    a, b = small.simulate_day(day), big.simulate_day(day, np.arange(10))
    assert np.array_equal(a.values, b.values, equal_nan=True)


def test_cadence_and_chunking_do_not_change_a_reading(catalog: Catalog):
    """A reading at a given minute is the same at 1-minute or 10-minute cadence and in live mode."""
    fleet = Fleet(catalog, 8, 3)
    start = END - timedelta(hours=30)  # crosses midnight
    every_minute = _rows(fleet, start, END, 60)
    every_ten = _rows(fleet, start, END, 600)
    assert every_ten and all(key in every_minute for key in every_ten)
    assert all(np.array_equal(every_ten[k], every_minute[k], equal_nan=True) for k in every_ten)
    live = LiveSimulator(fleet, Path("unused"), 60, use_database=False)
    ts = END - timedelta(minutes=7)
    for record in live.readings_at(ts):
        expected = every_minute[(record["equipment_id"], int(ts.timestamp()))]
        got = [np.nan if record[s] is None else record[s] for s in fleet.sensors]
        assert np.array_equal(np.array(got), expected, equal_nan=True)


def test_readings_look_like_a_real_fleet(catalog: Catalog):
    """Most readings sit in the type's healthy envelope, with a few gaps and nulls, never impossible."""
    fleet = Fleet(catalog, 40, 11)
    start = END - timedelta(days=3)
    chunks = list(fleet.chunks(start, END, 600))
    values = np.concatenate([c.values for c in chunks])
    eq = np.concatenate([c.equipment_index for c in chunks])
    expected_rows = 40 * 3 * 144
    assert 0.9 * expected_rows < len(values) < expected_rows  # dropouts, downtime
    assert 0 < np.isnan(values).mean() < 0.02
    inside = []
    for col, sensor in enumerate(fleet.sensors):
        low, high = catalog.sensors[sensor].valid_range
        column = values[:, col]
        assert np.nanmin(column) >= low and np.nanmax(column) <= high
        bands = np.array([catalog.envelope(fleet.equipment[i].equipment_type, sensor) for i in eq])
        slack = (bands[:, 1] - bands[:, 0]) * 0.25
        ok = (column >= bands[:, 0] - slack) & (column <= bands[:, 1] + slack)
        inside.append(ok[~np.isnan(column)].mean())
    assert min(inside) > 0.8, dict(zip(fleet.sensors, inside, strict=True))
    # The daily ambient cycle: afternoons are warmer than nights across the fleet.
    chunk_ts = np.concatenate([c.ts_s for c in chunks])
    hour = (chunk_ts % DAY_S) // 3600
    temperature = values[:, fleet.sensors.index("temperature")]
    assert np.nanmean(temperature[(hour >= 13) & (hour < 17)]) > np.nanmean(
        temperature[(hour >= 1) & (hour < 5)]
    )


def test_failure_plan_gives_enough_failures_to_learn_from(catalog: Catalog):
    """200 equipment over 180 days fail 100+ times, ~10% suddenly, each followed by a repair."""
    fleet = Fleet(catalog, 200, 42)
    end_s = int(END.timestamp())
    start_s = end_s - 180 * DAY_S
    episodes = [
        ep
        for eq in fleet.equipment
        for ep in eq.episodes_until(end_s)
        if start_s <= ep.failure_s < end_s
    ]
    assert 100 <= len(episodes) <= 260
    sudden = sum(ep.sudden for ep in episodes) / len(episodes)
    assert 0.03 <= sudden <= 0.2
    assert {ep.mode for ep in episodes} == {
        "bearing_wear",
        "electrical",
        "seal_leak",
        "cooling_fault",
    }
    for ep in episodes:
        assert ep.degradation_start_s <= ep.failure_s < ep.repaired_s
        assert ep.repaired_s - ep.failure_s <= 48 * 3600
        if not ep.sudden:
            assert ep.failure_s - ep.degradation_start_s >= 10 * DAY_S


def test_extra_catalog_sensor_is_simulated(catalog: Catalog, extra_sensor_catalog: Path):
    """A sensor added to the catalog gets readings, and the other sensors' readings do not change."""
    extra = load_catalog(extra_sensor_catalog)
    start = END - timedelta(days=1)
    with_extra = _rows(Fleet(extra, 6, 5), start, END, 600)
    plain = _rows(Fleet(catalog, 6, 5), start, END, 600)
    assert with_extra.keys() == plain.keys()
    column = np.array([v[-1] for v in with_extra.values()])
    assert np.isfinite(column).mean() > 0.98
    assert np.nanmin(column) >= 0 and np.nanmax(column) <= 5000
    assert np.nanstd(column) > 0
    assert all(np.array_equal(with_extra[k][:-1], plain[k], equal_nan=True) for k in plain)
