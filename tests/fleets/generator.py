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
        # An operating point on the edge of its range (Mach 0 on the ground) stays inside it.
        bounds = np.array([catalog.channels[s].valid_range for s in settings], dtype=float)
        setting_values = setting_values.clip(bounds[:, 0], bounds[:, 1])
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
    failure_every_days: float | None = None,
) -> Fleet:
    """Machines of every time-clocked type reading each channel of their type once an hour;
    every other machine drifts on one sensor for two days and fails (once, its readings ending
    there; or about every `failure_every_days`, down for half a day each time, the failure found
    by a service half the time); half the machines of each type have a site."""
    rng = np.random.default_rng(seed)
    rows, failures, registry, services = [], [], [], []
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
            failed_hours = []
            if fails and failure_every_days is None:
                failed_hours = [int(rng.integers(hours // 2, hours - 12))]
            elif fails:
                hour = int(rng.uniform(0.3, 1.0) * failure_every_days * 24)
                while hour < hours - 12:
                    failed_hours.append(hour)
                    hour += int(rng.uniform(0.7, 1.3) * failure_every_days * 24)
            drifting = sensors[number % len(sensors)]
            ramp = np.zeros(hours)
            for failed_hour in failed_hours:
                since = np.arange(hours) - (failed_hour - 48)
                ramp = np.where((since >= 0) & (since < 48), since / 48, ramp)
            for sensor in sensors:
                band = etype.channels.get(sensor)
                low, high = band or catalog.channels[sensor].valid_range
                middle = (low + high) / 2 if band else low + (high - low) * 0.4
                spread = (high - low) / (8 if band else 30)
                values = middle + spread * (0.5 * daily + rng.normal(0, 0.6, hours))
                if sensor == drifting:
                    values = values + spread * 4 * ramp
                data[sensor] = values
            frame = pd.DataFrame(data)
            # Some readings lost, some values missing: real devices do both.
            frame = frame[rng.random(hours) > 0.05]
            frame.loc[frame.sample(frac=0.03, random_state=number).index, sensors[-1]] = np.nan
            for failed_hour in failed_hours:
                failed_at = ts[failed_hour].to_pydatetime()
                repaired_at = failed_at + timedelta(hours=12)
                if failure_every_days is None:
                    frame = frame[frame["ts"] < failed_at]
                    repaired_at = None
                else:
                    frame = frame[(frame["ts"] < failed_at) | (frame["ts"] >= repaired_at)]
                if failure_every_days is not None and rng.random() < 0.5:
                    # Found failed by a service: the outcome is the label.
                    services.append(
                        {
                            "equipment_id": equipment_id,
                            "performed_at": failed_at,
                            "kind": "preventive",
                            "outcome": "failed_before_service",
                        }
                    )
                    continue
                failures.append(
                    {
                        "equipment_id": equipment_id,
                        "failed_at": failed_at,
                        "repaired_at": repaired_at,
                        "cycle": None,
                        "failure_mode": f"{drifting} fault",
                    }
                )
            if failure_every_days is not None and not fails:
                services.append(
                    {
                        "equipment_id": equipment_id,
                        "performed_at": ts[hours // 2].to_pydatetime(),
                        "kind": "preventive",
                        "outcome": "no_fault_found",
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
    return Fleet(
        pd.DataFrame(registry),
        pd.concat(rows, ignore_index=True),
        pd.DataFrame(failures),
        pd.DataFrame(services, columns=["equipment_id", "performed_at", "kind", "outcome"]),
    )


def write_drop_pack(fleet: Fleet, catalog_path, out) -> None:
    """A pack in the drop formats: equipment.csv, a CSV of readings per machine, failures.csv
    and maintenance.csv with the services' outcomes."""
    from pathlib import Path

    out = Path(out)
    (out / "readings").mkdir(parents=True)
    (out / "catalog.yaml").write_text(Path(catalog_path).read_text())
    fleet.equipment.to_csv(out / "equipment.csv", index=False)
    for equipment_id, rows in fleet.readings.groupby("equipment_id"):
        drop = rows.rename(columns={"ts": "timestamp"}).dropna(axis=1, how="all")
        drop.to_csv(
            out / "readings" / f"{equipment_id}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ"
        )
    failures = fleet.failures.drop(columns=["cycle"], errors="ignore")
    failures.to_csv(out / "failures.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    fleet.maintenance.to_csv(out / "maintenance.csv", index=False, date_format="%Y-%m-%dT%H:%M:%SZ")


def write_text_pack(
    fleet: Fleet,
    catalog_path,
    out,
    test_units: Fleet | None = None,
    prefix: str = "ENG-",
) -> None:
    """A run-to-failure pack whose readings are headerless whitespace-separated text, as public
    run-to-failure data sets ship them (unit number, cycle, settings, sensors per line), read
    through pack.yaml's column map; `test_units` are cut before they fail, their true remaining
    life in test/rul.csv by line (the n-th unit's)."""
    from pathlib import Path

    import yaml

    out = Path(out)
    (out / "readings").mkdir(parents=True)
    (out / "catalog.yaml").write_text(Path(catalog_path).read_text())
    columns = [c for c in fleet.readings.columns if c not in ("equipment_id", "cycle")]

    def lines(frame: pd.DataFrame, unit_prefix: str) -> str:
        numbers = frame["equipment_id"].str.removeprefix(unit_prefix).astype(int)
        body = pd.concat([numbers, frame["cycle"].astype(int), frame[columns]], axis=1)
        return body.to_csv(sep=" ", header=False, index=False, float_format="%.4f")

    (out / "readings" / "train_001.txt").write_text(lines(fleet.readings, prefix))
    equipment_type = fleet.equipment["equipment_type"].iloc[0]
    spec = {
        "readings": {
            "delimiter": "whitespace",
            "header": False,
            "columns": ["equipment_id", "cycle", *columns],
            "equipment_id_prefix": prefix,
            "run_to_failure": True,
        },
        "equipment": {"equipment_type": equipment_type},
    }
    if test_units is not None:
        (out / "test").mkdir()
        cut_rows, remaining = [], []
        for number, (_, rows) in enumerate(test_units.readings.groupby("equipment_id"), 1):
            life = len(rows)
            keep = max(5, int(life * 0.6))
            cut_rows.append(rows.iloc[:keep].assign(equipment_id=f"{prefix}{number}"))
            remaining.append(str(life - keep))
        (out / "test" / "test_001.txt").write_text(lines(pd.concat(cut_rows), prefix))
        (out / "test" / "rul.csv").write_text("\n".join(remaining) + "\n")
        spec["test"] = {"equipment_id_prefix": f"{prefix}T", "rul": {"header": False}}
    (out / "pack.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
