"""Drop files as devices write them: CSV, JSON array or NDJSON, some gzip'd, some malformed.

Contract (DESIGN.md): columns equipment_id, timestamp (ISO-8601 with offset, or epoch seconds),
one column per catalog sensor; a missing sensor is null (an empty CSV field, JSON null).
Files appear atomically: written under a hidden `.NAME.part` name in the same folder, then renamed.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np

FORMATS = ("csv", "json", "ndjson")
FORMAT_WEIGHTS = (0.45, 0.3, 0.25)
GZIP_SHARE = 0.25
# Defects injected with --bad-share, each a thing real gateways have sent.
DEFECTS = (
    "bad_number",  # a sensor value that is not a number
    "out_of_range",  # a physically impossible value
    "unknown_equipment",  # an id nobody registered
    "bad_timestamp",  # a timestamp that does not parse
    "duplicate_row",  # the same reading twice
    "truncated",  # the file ends mid-record
    "wrong_delimiter",  # CSV written with ';'
    "missing_column",  # no equipment_id column at all
    "empty_file",  # zero bytes
)
UNKNOWN_EQUIPMENT_ID = "UNREGISTERED-0000"


@dataclass(frozen=True)
class DropFile:
    """A file written to the landing folder and what it contains (tests compare against it)."""

    path: Path
    format: str
    gzipped: bool
    rows: int
    defect: str | None = None


def format_timestamp(ts: datetime, style: str, offset_hours: int = 0) -> str | int:
    """A reading time as a device writes it: ISO-8601 with an offset, or epoch seconds."""
    if style == "epoch":
        return int(ts.timestamp())
    return ts.astimezone(timezone(timedelta(hours=offset_hours))).isoformat()


def render(records: list[dict], columns: list[str], fmt: str, delimiter: str = ",") -> bytes:
    """Serialise records (None = null) in a drop format."""
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        writer.writerow(columns)
        for record in records:
            writer.writerow(["" if record.get(c) is None else record.get(c) for c in columns])
        return out.getvalue().encode()
    if fmt == "json":
        return json.dumps([{c: r.get(c) for c in columns} for r in records]).encode()
    if fmt == "ndjson":
        return "".join(json.dumps({c: r.get(c) for c in columns}) + "\n" for r in records).encode()
    raise ValueError(f"unknown drop format {fmt!r}; use one of {', '.join(FORMATS)}")


def write_atomic(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` as directory/name so that readers never see a partial file."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    temporary = directory / f".{name}.part"
    # No fsync: the rename alone makes the file appear whole to readers, and a simulated reading
    # lost in a power cut does not matter (fsync per file would cost more than the data).
    temporary.write_bytes(data)
    os.replace(temporary, final)
    return final


def inject_defect(
    records: list[dict],
    sensors: list[str],
    valid_ranges: dict[str, tuple[float, float]],
    defect: str,
    rng: np.random.Generator,
) -> list[dict]:
    """Spoil one row of `records` the way `defect` says (file-level defects happen at render)."""
    records = [dict(r) for r in records]
    row = records[int(rng.integers(len(records)))]
    sensor = sensors[int(rng.integers(len(sensors)))]
    if defect == "bad_number":
        row[sensor] = str(rng.choice(["n/a", "12,5", "--", "NaN?", "1.2.3"]))
    elif defect == "out_of_range":
        low, high = valid_ranges[sensor]
        row[sensor] = round(high + (high - low) * float(rng.uniform(1, 10)), 3)
    elif defect == "unknown_equipment":
        row["equipment_id"] = UNKNOWN_EQUIPMENT_ID
    elif defect == "bad_timestamp":
        row["timestamp"] = str(rng.choice(["yesterday", "2026-13-45T25:61:00", "0x5f3a"]))
    elif defect == "duplicate_row":
        records.append(dict(row))
    return records


def build_drop(
    records: list[dict],
    sensors: list[str],
    valid_ranges: dict[str, tuple[float, float]],
    fmt: str,
    gzipped: bool,
    defect: str | None,
    rng: np.random.Generator,
) -> tuple[bytes, str]:
    """The bytes of one drop file and its (possibly changed) format."""
    columns = ["equipment_id", "timestamp", *sensors]
    delimiter = ","
    if defect in (
        "bad_number",
        "out_of_range",
        "unknown_equipment",
        "bad_timestamp",
        "duplicate_row",
    ):
        records = inject_defect(records, sensors, valid_ranges, defect, rng)
    elif defect == "wrong_delimiter":
        fmt, delimiter = "csv", ";"
    elif defect == "missing_column":
        columns = columns[1:]
    data = b"" if defect == "empty_file" else render(records, columns, fmt, delimiter)
    if gzipped:
        data = gzip.compress(data, mtime=0)
    if defect == "truncated":
        data = data[: max(1, int(len(data) * 0.6))]
    return data, fmt


def file_name(source: str, ts: datetime, fmt: str, gzipped: bool) -> str:
    stamp = ts.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{source}-{stamp}.{fmt}" + (".gz" if gzipped else "")


def runaway_wear_rows(equipment_id: str, now: datetime) -> list[dict]:
    """Three days of a generator ending at `now`: two healthy, then bearing wear running away on
    the third. Stronger than the fleet's own episodes, so even a small model alerts on it (the
    end-to-end test and bench/e2e.py drop it)."""
    rows = []
    start = now - timedelta(days=3)
    steps = 3 * 24 * 6
    for i in range(steps + 1):
        wear = max(0.0, (i - 2 * 24 * 6) / (24 * 6))  # 0 for two days, then 0 -> 1
        rows.append(
            {
                "equipment_id": equipment_id,
                "timestamp": (start + timedelta(minutes=10 * i)).isoformat(),
                "temperature": round(80 + 30 * wear**1.5 + (i % 3 - 1) * 0.4, 2),
                "vibration": round(3.2 + 9.0 * wear + (i % 5 - 2) * 0.08, 3),
                "pressure": round(360 + (i % 7 - 3) * 2.0, 1),
                "humidity": round(40 + (i % 11 - 5) * 0.8, 1),
                "voltage": round(410 + (i % 5 - 2) * 1.5, 1),
            }
        )
    return rows
