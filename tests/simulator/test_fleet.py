"""The simulated fleet's physics and plan, checked without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pydantic
import pytest

from emps.catalog import Catalog, load_catalog
from emps.commands.simulate import _fleet
from emps.settings import Settings, get_settings
from emps.simulator.events import fleet_events
from emps.simulator.fleet import DAY_S, SIM_EPOCH, Fleet, Realism
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
    """200 equipment over 180 days fail 100+ times, ~10% suddenly, each followed by a repair;
    services find some faults before they fail."""
    fleet = Fleet(catalog, 200, 42)
    end_s = int(END.timestamp())
    start_s = end_s - 180 * DAY_S
    ended = [
        ep
        for eq in fleet.equipment
        for ep in eq.episodes_until(end_s)
        if start_s <= ep.ended_s < end_s
    ]
    episodes = [ep for ep in ended if not ep.prevented]
    assert 100 <= len(episodes) <= 260
    assert 0.01 * len(ended) <= len(ended) - len(episodes) <= 0.3 * len(ended)
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


def _events(fleet: Fleet, days: int = 365):
    end = END
    return fleet_events(fleet, end - timedelta(days=days), end)


def _in_fault(fleet: Fleet, service) -> bool:
    eq = fleet.by_id[service.equipment_id]
    return any(
        ep.degradation_start_s <= service.start_s < ep.ended_s
        for ep in eq.episodes_until(service.end_s)
    )


def test_services_land_by_the_calendar_in_developing_faults_too(catalog: Catalog):
    """Preventive services keep their calendar while a fault develops, so a recent service does
    not promise health; the easy fleet skipped those."""
    end_s = int(END.timestamp())
    for realism, expect_some in ((Realism(), True), (Realism.off(), False)):
        fleet = Fleet(catalog, 150, 42, realism)
        services = [
            s for eq in fleet.equipment for s in eq.services_between(end_s - 365 * DAY_S, end_s)
        ]
        assert len(services) > 150 * 3
        in_fault = sum(_in_fault(fleet, s) for s in services)
        assert (in_fault > 20) is expect_some, in_fault
    # The calendar is the same either way: the realistic fleet has every service the easy one
    # had, and more (the ones that met a fault).
    easy = {
        (s.equipment_id, s.start_s)
        for eq in Fleet(catalog, 150, 42, Realism.off()).equipment
        for s in eq.services_between(end_s - 365 * DAY_S, end_s)
    }
    real = {
        (s.equipment_id, s.start_s)
        for eq in Fleet(catalog, 150, 42).equipment
        for s in eq.services_between(end_s - 365 * DAY_S, end_s)
    }
    assert easy < real


def test_a_service_sometimes_finds_a_developing_fault_and_that_failure_never_happens(
    catalog: Catalog,
):
    """A service in a developing fault finds it (a prevented failure: recorded as a service that
    found a fault, no failure recorded, the machine never goes down) or misses it (the machine
    fails later)."""
    fleet = Fleet(catalog, 150, 42)
    events = _events(fleet)
    found = [(e, done) for e, _begin, done, hit in events.services if hit]
    missed = [
        s
        for eq in fleet.equipment
        for s in eq.services_between(int(END.timestamp()) - 300 * DAY_S, int(END.timestamp()))
        if _in_fault(fleet, s) and not s.found_fault
    ]
    assert len(found) >= 5 and len(missed) >= 5
    failed = {(e, at) for e, at, *_ in events.failures}
    for equipment_id, done in found:
        ep = next(
            ep
            for ep in fleet.by_id[equipment_id].episodes_until(int(done.timestamp()))
            if ep.found_s == int(done.timestamp())
        )
        assert ep.prevented and ep.found_s < ep.failure_s
        assert (equipment_id, ep.recorded_at) not in failed
        assert not any(
            e == equipment_id and ep.found_s <= at.timestamp() < ep.failure_s + DAY_S
            for e, at in failed
        )
        # Its readings go on through the day it would have failed: it never went down.
        day = (ep.failure_s - int(SIM_EPOCH.timestamp())) // DAY_S
        block = fleet.simulate_day(day, np.array([fleet.by_id[equipment_id].index]))
        assert block.present.mean() > 0.9
    # A missed fault goes on to fail: a service that met a fault and found nothing is followed
    # by that fault's failure.
    for service in missed[:5]:
        ep = next(
            ep
            for ep in fleet.by_id[service.equipment_id].episodes_until(service.end_s)
            if ep.degradation_start_s <= service.start_s < ep.ended_s
        )
        assert not ep.prevented or ep.found_s > service.end_s


def test_failure_times_are_recorded_to_the_hour(catalog: Catalog):
    """The records hold each failure's hour; the readings stop on the minute it failed."""
    fleet = Fleet(catalog, 60, 42)
    events = _events(fleet, 180)
    assert len(events.failures) > 20
    assert all(at.minute == 0 and at.second == 0 for _e, at, *_ in events.failures)
    episodes = [
        ep
        for eq in fleet.equipment
        for ep in eq.episodes_until(int(END.timestamp()))
        if not ep.prevented
    ]
    assert sum(ep.failure_s % 3600 != 0 for ep in episodes) > 0.9 * len(episodes)
    assert all(0 <= ep.failure_s - ep.recorded_s < 3600 for ep in episodes)


def test_machines_fail_at_different_damage(catalog: Catalog):
    """How far a fault has drifted when the machine fails differs from machine to machine,
    much more than in the easy fleet."""

    def spread(realism: Realism) -> float:
        fleet = Fleet(catalog, 150, 42, realism)
        amplitudes = [
            ep.amplitude
            for eq in fleet.equipment
            for ep in eq.episodes_until(int(END.timestamp()))
            if not ep.sudden
        ]
        low, high = np.percentile(amplitudes, [10, 90])
        return high / low

    assert spread(Realism.off()) < 1.25
    assert spread(Realism()) > 1.6


def _primary_rise(catalog: Catalog, realism: Realism, mode: str) -> tuple[float, dict]:
    """The rise of each sensor (envelope half-widths) over the last day before a `mode` failure
    against the days before its onset, for the first such gradual failure of seed 42."""
    fleet = Fleet(catalog, 60, 42, realism)
    ep = min(
        (
            ep
            for eq in fleet.equipment
            for ep in eq.episodes_until(int(END.timestamp()))
            if ep.mode == mode and not ep.sudden and not ep.prevented and not ep.flicker_hours
        ),
        key=lambda ep: ep.failure_s,
    )
    eq = fleet.by_id[ep.equipment_id]
    epoch = int(SIM_EPOCH.timestamp())
    last = (ep.failure_s - epoch) // DAY_S - 1
    before = (ep.degradation_start_s - epoch) // DAY_S - 3
    rise = {}
    for col, sensor in enumerate(fleet.sensors):
        low, high = catalog.envelope(eq.equipment_type, sensor)
        late = fleet.simulate_day(last, np.array([eq.index])).values[0, col]
        early = np.concatenate(
            [
                fleet.simulate_day(d, np.array([eq.index])).values[0, col]
                for d in (before, before + 1)
            ]
        )
        rise[sensor] = (np.nanmean(late) - np.nanmean(early)) / ((high - low) / 2)
    return rise


def test_a_fault_shows_on_several_sensors_each_by_less(catalog: Catalog):
    """A seal leak lowers pressure by less than in the easy fleet, and raises vibration and
    temperature too."""
    from dataclasses import replace

    single = replace(Realism(), primary_share=1.0)
    spread = _primary_rise(catalog, Realism(), "seal_leak")
    alone = _primary_rise(catalog, single, "seal_leak")
    assert spread["pressure"] < -0.5 and alone["pressure"] < spread["pressure"] - 0.3
    assert spread["vibration"] > alone["vibration"] + 0.2
    assert spread["temperature"] > alone["temperature"] + 0.1


def test_intermittent_faults_come_and_go(catalog: Catalog):
    """An intermittent fault's drift drops back for hours at a time before it settles in."""
    fleet = Fleet(catalog, 80, 42)
    ep = min(
        (
            ep
            for eq in fleet.equipment
            for ep in eq.episodes_until(int(END.timestamp()))
            if ep.flicker_hours and not ep.sudden and not ep.prevented and ep.mode == "seal_leak"
        ),
        key=lambda ep: ep.failure_s,
    )
    eq = fleet.by_id[ep.equipment_id]
    col = fleet.sensors.index("pressure")
    epoch = int(SIM_EPOCH.timestamp())
    last = (ep.failure_s - epoch) // DAY_S
    days = range(last - 8, last - 2)
    values = np.concatenate(
        [fleet.simulate_day(d, np.array([eq.index])).values[0, col] for d in days]
    )
    hourly = np.nanmean(values.reshape(-1, 60), axis=1)
    low, high = catalog.envelope(eq.equipment_type, "pressure")
    drops = np.diff(hourly) / ((high - low) / 2)
    # The leak lowers pressure; when it comes back it falls, when it goes quiet it recovers.
    assert drops.max() > 0.4 and drops.min() < -0.4


def test_each_machine_has_its_own_weather(catalog: Catalog):
    """Humidity at machines of one site differs from the site's median day to day (the easy
    fleet's machines differed by a fixed offset)."""

    def wobble(realism: Realism) -> float:
        fleet = Fleet(catalog, 120, 42, realism)
        site = max(range(12), key=lambda s: sum(e.site_index == s for e in fleet.equipment))
        idx = np.array([e.index for e in fleet.equipment if e.site_index == site])
        col = fleet.sensors.index("humidity")
        first = (int(END.timestamp()) - int(SIM_EPOCH.timestamp())) // DAY_S - 20
        daily = np.array(
            [
                np.nanmean(fleet.simulate_day(d, idx).values[:, col], axis=1)
                for d in range(first, first + 20)
            ]
        )  # (days, machines)
        residual = daily - np.median(daily, axis=1, keepdims=True)
        return float(np.median(residual.std(axis=0)))

    assert wobble(Realism()) > 3 * wobble(Realism.off())


def test_a_replaced_sensor_reads_with_a_new_offset(catalog: Catalog):
    """The hour after a sensor is replaced reads off the hour before by the new sensor's
    calibration; sensors also wander from month to month."""
    from dataclasses import replace

    fleet = Fleet(
        catalog, 40, 42, replace(Realism.off(), sensor_drift=0.1, sensor_replacements_per_year=2.0)
    )
    col = fleet.sensors.index("humidity")
    epoch = int(SIM_EPOCH.timestamp())
    jumps = []
    for eq in fleet.equipment[:20]:
        block = fleet._calibration_block(eq.index, "humidity", 1)
        for fitted in block.fitted[np.isfinite(block.fitted)]:
            fitted = int(fitted) // 60 * 60
            minute = (fitted - epoch) % DAY_S // 60
            if not 120 <= minute < 1440 - 120:
                continue
            values = fleet.simulate_day((fitted - epoch) // DAY_S, np.array([eq.index])).values[
                0, col
            ]
            low, high = catalog.envelope(eq.equipment_type, "humidity")
            jumps.append(
                (
                    np.nanmean(values[minute : minute + 60])
                    - np.nanmean(values[minute - 60 : minute])
                )
                / ((high - low) / 2)
            )
    assert len(jumps) >= 5
    assert np.median(np.abs(jumps)) > 0.05
    easy = Fleet(catalog, 40, 42, Realism.off())
    assert easy._calibration(np.arange(3), np.arange(3) * 60) == 0.0


def test_the_bands_that_generate_data_are_not_the_catalogs(catalog: Catalog):
    """The fleet's healthy medians sit off the catalog bands' midpoints by different amounts per
    type and sensor."""

    def offsets(realism: Realism) -> np.ndarray:
        fleet = Fleet(catalog, 150, 42, realism)
        mid, _half = fleet._mid_half
        expected = np.array(
            [
                [sum(catalog.envelope(e.equipment_type, s)) / 2 for s in fleet.sensors]
                for e in fleet.equipment
            ]
        )
        return mid - expected

    assert np.abs(offsets(Realism.off())).max() == 0
    assert np.abs(offsets(Realism())).max() > 0


def test_the_realism_setting_picks_the_real_or_the_easy_fleet(monkeypatch):
    """EMPS_SIM_REALISM=easy gives `emps simulate` and the first start the easy fleet of
    earlier versions (services skip developing faults), to compare a model on both; the default
    is the realistic one; anything else is refused, naming the setting."""
    monkeypatch.setenv("EMPS_SIM_REALISM", "easy")
    get_settings.cache_clear()
    try:
        easy = _fleet(150, 42)
    finally:
        monkeypatch.delenv("EMPS_SIM_REALISM")
        get_settings.cache_clear()
    real = _fleet(150, 42)
    assert (easy.realism, real.realism) == (Realism.off(), Realism())
    end_s = int(END.timestamp())

    def services_in_faults(fleet: Fleet) -> int:
        return sum(
            _in_fault(fleet, s)
            for eq in fleet.equipment
            for s in eq.services_between(end_s - 365 * DAY_S, end_s)
        )

    assert services_in_faults(easy) == 0 < services_in_faults(real)
    with pytest.raises(pydantic.ValidationError, match=r"simulator\.realism"):
        Settings(_env_file=None, simulator={"realism": "hard"})
