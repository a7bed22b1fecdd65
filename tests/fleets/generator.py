"""Fleets for the generality tests, generated from a catalog alone.

This shares no code with emps/simulator: its physics, cadence, regimes and faults are its own,
so a feature or a test that passes here does not pass because of how the built-in simulator
draws its numbers. Two shapes:

- run-to-failure engines on a cycle clock: each cycle flown in one of a few operating regimes
  (the settings), sensors that depend strongly on the regime and drift with accumulated wear
  (a power law of the life used), each engine run until it fails;
- an hourly fleet of several types with their own sensor subsets, daily cycles and a slow drift
  on one sensor before a failure, sites on only some machines.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from emps.catalog import Catalog

REGIME_POINTS = np.array(
    [  # altitude kft, Mach, throttle deg
        [0.0, 0.0, 100.0],
        [10.0, 0.25, 100.0],
        [20.0, 0.70, 100.0],
        [25.0, 0.62, 60.0],
        [35.0, 0.84, 100.0],
        [42.0, 0.84, 100.0],
    ]
)


@dataclass
class Fleet:
    """What a fleet's history holds: its registry, readings, failures and services."""

    equipment: pd.DataFrame  # equipment_id, equipment_type, site, commissioned_at
    readings: pd.DataFrame  # equipment_id, ts and/or cycle, one column per channel
    failures: pd.DataFrame  # equipment_id, failed_at, cycle (counter clocks), failure_mode
    maintenance: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            columns=["equipment_id", "performed_at", "kind", "outcome"]
        )
    )


def _unit_draw(*keys: object) -> float:
    """A stable number in [0, 1) from keys (a sensor's response to a regime, say)."""
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def run_to_failure(
    catalog: Catalog,
    equipment_type: str,
    engines: int = 12,
    seed: int = 0,
    life: tuple[int, int] = (90, 160),
    prefix: str = "ENG",
) -> Fleet:
    """Engines flown cycle by cycle until they fail; readings carry the cycle, no timestamp."""
    rng = np.random.default_rng(seed)
    etype = catalog.equipment_types[equipment_type]
    settings = catalog.type_settings(equipment_type)
    sensors = catalog.type_sensors(equipment_type)
    points = REGIME_POINTS[:, : len(settings)]
    rows, failures, registry = [], [], []
    for number in range(1, engines + 1):
        equipment_id = f"{prefix}-{number:03d}"
        lifetime = int(rng.integers(*life))
        wear_power = rng.uniform(1.5, 3.0)
        cycles = np.arange(1, lifetime + 1)
        regime = rng.integers(0, len(points), lifetime)
        spans = np.array([np.ptp(catalog.channels[s].valid_range) for s in settings])
        setting_values = points[regime] + rng.normal(0, 0.001, (lifetime, len(settings))) * spans
        wear = (cycles / lifetime) ** wear_power
        data = {"equipment_id": equipment_id, "cycle": cycles.astype(float)}
        for j, setting in enumerate(settings):
            data[setting] = setting_values[:, j]
        for sensor in sensors:
            low, high = catalog.channels[sensor].valid_range
            span = high - low
            level = np.array([0.3 + 0.4 * _unit_draw(sensor, r) for r in range(len(points))])
            response = (_unit_draw(sensor, "wear") - 0.35) * 0.08 * span
            offset = rng.normal(0, 0.003 * span)
            noise = (0.002 + 0.004 * _unit_draw(sensor, "noise")) * span
            data[sensor] = (
                low
                + span * level[regime]
                + offset
                + response * wear
                + rng.normal(0, noise, lifetime)
            )
        rows.append(pd.DataFrame(data))
        start = etype.clock.start or datetime(2000, 1, 1, tzinfo=UTC)
        failures.append(
            {
                "equipment_id": equipment_id,
                "cycle": float(lifetime),
                "failed_at": start + timedelta(seconds=lifetime * etype.clock.interval_s),
                "failure_mode": "wear-out",
            }
        )
        registry.append(
            {
                "equipment_id": equipment_id,
                "equipment_type": equipment_type,
                "site": None,
                "commissioned_at": None,
            }
        )
    return Fleet(pd.DataFrame(registry), pd.concat(rows, ignore_index=True), pd.DataFrame(failures))


def with_derived_time(fleet: Fleet, catalog: Catalog) -> pd.DataFrame:
    """The readings with the timestamp a counter clock derives: start + cycle x interval."""
    frames = []
    types = fleet.equipment.set_index("equipment_id")["equipment_type"]
    for equipment_id, rows in fleet.readings.groupby("equipment_id"):
        clock = catalog.equipment_types[types[equipment_id]].clock
        start = pd.Timestamp(clock.start)
        frames.append(
            rows.assign(ts=start + pd.to_timedelta(rows["cycle"] * clock.interval_s, "s"))
        )
    return pd.concat(frames, ignore_index=True)


def hourly(
    catalog: Catalog,
    machines_per_type: int = 4,
    days: int = 8,
    seed: int = 0,
    start: datetime = datetime(2026, 5, 1, tzinfo=UTC),
) -> Fleet:
    """Machines of every time-clocked type reading each channel of their type once an hour;
    every other machine drifts on one sensor for two days and fails; half the machines of
    each type have a site."""
    rng = np.random.default_rng(seed)
    rows, failures, registry = [], [], []
    hours = days * 24
    ts = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    daily = np.sin(2 * np.pi * (np.arange(hours) % 24) / 24)
    for type_name, etype in catalog.equipment_types.items():
        if etype.clock.kind != "time":
            continue
        sensors = catalog.type_sensors(type_name)
        for number in range(1, machines_per_type + 1):
            equipment_id = f"{type_name[:3].upper()}{number:02d}"
            site = ("north", "south")[number % 2] if number <= machines_per_type // 2 + 1 else None
            data = {"equipment_id": equipment_id, "ts": ts}
            fails = number % 2 == 0
            failed_hour = int(rng.integers(hours // 2, hours - 12)) if fails else None
            drifting = sensors[number % len(sensors)]
            for sensor in sensors:
                band = etype.channels.get(sensor)
                low, high = band or catalog.channels[sensor].valid_range
                middle = (low + high) / 2 if band else low + (high - low) * 0.4
                spread = (high - low) / (8 if band else 30)
                values = middle + spread * (0.5 * daily + rng.normal(0, 0.6, hours))
                if failed_hour is not None and sensor == drifting:
                    ramp = np.clip((np.arange(hours) - (failed_hour - 48)) / 48, 0, None)
                    values = values + spread * 4 * ramp
                data[sensor] = values
            frame = pd.DataFrame(data)
            # Some readings lost, some values missing: real devices do both.
            frame = frame[rng.random(hours) > 0.05]
            frame.loc[frame.sample(frac=0.03, random_state=number).index, sensors[-1]] = np.nan
            if failed_hour is not None:
                failed_at = ts[failed_hour].to_pydatetime()
                frame = frame[frame["ts"] < failed_at]
                failures.append(
                    {
                        "equipment_id": equipment_id,
                        "failed_at": failed_at,
                        "cycle": None,
                        "failure_mode": f"{drifting} fault",
                    }
                )
            rows.append(frame)
            registry.append(
                {
                    "equipment_id": equipment_id,
                    "equipment_type": type_name,
                    "site": site,
                    "commissioned_at": start - timedelta(days=30),
                }
            )
    return Fleet(pd.DataFrame(registry), pd.concat(rows, ignore_index=True), pd.DataFrame(failures))
