"""The simulated fleet written as a fleet pack (`emps simulate pack OUT`): the simulator is one
fleet generator among others, and its history enters the platform the way any fleet's does."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from emps.simulator.events import fleet_events
from emps.simulator.fleet import Fleet

Progress = Callable[[int], None]


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).isoformat()


def write_pack(
    fleet: Fleet,
    start: datetime,
    end: datetime,
    interval_s: int,
    out: Path,
    catalog_text: str,
    progress: Progress | None = None,
) -> int:
    """Write the fleet's history over [start, end) at `interval_s` as a pack in `out`; the
    number of readings written. One gzip'd CSV drop file per day and batch of equipment."""
    readings = out / "readings"
    readings.mkdir(parents=True, exist_ok=True)
    (out / "catalog.yaml").write_text(catalog_text, encoding="utf-8")
    _write_csv(
        out / "equipment.csv",
        ["equipment_id", "equipment_type", "site", "unit", "commissioned_at"],
        [
            [e.equipment_id, e.equipment_type, e.site, e.unit, _iso(e.commissioned_at)]
            for e in fleet.equipment
        ],
    )
    ids = np.array([e.equipment_id for e in fleet.equipment], dtype=object)
    rows = 0
    for number, chunk in enumerate(fleet.chunks(start, end, interval_s)):
        if not len(chunk):
            continue
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["equipment_id", "timestamp", *fleet.sensors])
        stamps = chunk.ts_s.astype("datetime64[s]").astype(str)
        for equipment, stamp, values in zip(
            ids[chunk.equipment_index], stamps, chunk.values, strict=True
        ):
            writer.writerow(
                [equipment, f"{stamp}Z", *("" if np.isnan(v) else f"{v:.6g}" for v in values)]
            )
        day = datetime.fromtimestamp(int(chunk.ts_s.min()), UTC).strftime("%Y-%m-%d")
        path = readings / f"{day}-{number:05d}.csv.gz"
        path.write_bytes(gzip.compress(text.getvalue().encode(), compresslevel=1))
        rows += len(chunk)
        if progress:
            progress(len(chunk))
    events = fleet_events(fleet, start, end)
    _write_csv(
        out / "failures.csv",
        ["equipment_id", "failed_at", "failure_mode", "repaired_at", "notes"],
        [[e, _iso(f), mode, _iso(r), note] for e, f, mode, r, note in events.failures],
    )
    services = [
        [
            e,
            _iso(done),
            "preventive",
            "fault_found" if found else "no_fault_found",
            "periodic preventive service" + (": developing fault found, mended" if found else ""),
        ]
        for e, _begin, done, found in events.services
    ] + [[e, _iso(done), "repair", "fault_found", note] for e, _f, done, note in events.repairs]
    _write_csv(
        out / "maintenance.csv",
        ["equipment_id", "performed_at", "kind", "outcome", "notes"],
        sorted(services, key=lambda row: (row[1], row[0])),
    )
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
