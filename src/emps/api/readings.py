"""Reading an ingest request's body and checking its readings before any is accepted.

The body is one JSON object (a reading), a JSON array of them, or NDJSON (one per line). Each
reading is checked the way ingest types a drop file (`emps.ingest.validate.prepare`: the same
timestamp, id and number rules, the same words) and against the catalog's channels and valid
ranges, so what the API accepts is what ingest loads. A request with any bad reading is
refused whole (422), every problem naming its row (1-based, in the order sent) and field.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emps.catalog import Catalog
from emps.ingest.columns import (
    COUNTER,
    EQUIPMENT_ID_PATTERN,
    KEY_COLUMNS,
    STRICT_TIMESTAMP,
    counts_usage,
    reading_columns,
    reading_time_bounds,
)
from emps.ingest.columns import required_columns as file_required_columns
from emps.settings import Settings

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")
MAX_PROBLEMS = 100  # listed in one answer; the count says how many more
_PLAIN_ID = re.compile(EQUIPMENT_ID_PATTERN)


@dataclass(frozen=True)
class Problem:
    """What is wrong with one reading (`row` 1-based) or the whole body (`row` None)."""

    row: int | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message}


class BadBody(Exception):
    """The body cannot be read as readings at all."""

    def __init__(self, problems: list[Problem]):
        super().__init__(problems[0].message)
        self.problems = problems


def parse_body(body: bytes, content_type: str) -> list[Any]:
    """The items of a body: a JSON object, a JSON array, or NDJSON lines."""
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody([Problem(None, None, f"the body is not UTF-8 (byte {exc.start})")]) from None
    if media in NDJSON_TYPES:
        items, problems = [], []
        for number, line in enumerate((ln for ln in text.splitlines() if ln.strip()), start=1):
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                problems.append(Problem(number, None, f"line {number} is not JSON ({exc.msg})"))
        if problems:
            raise BadBody(problems)
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadBody(
                [
                    Problem(
                        None,
                        None,
                        f"the body is not JSON ({exc.msg} at line {exc.lineno} column "
                        f"{exc.colno}); send an object, an array of objects, or NDJSON with "
                        "Content-Type: application/x-ndjson",
                    )
                ]
            ) from None
        items = value if isinstance(value, list) else [value]
    if not items:
        raise BadBody([Problem(None, None, "the body holds no readings")])
    return items


def check_readings(
    items: list[Any],
    catalog: Catalog,
    settings: Settings,
    now: datetime | None = None,
    slow: bool = True,
) -> tuple[list[dict[str, Any]], list[Problem] | None]:
    """The readings as records (field names trimmed and lower-cased), and every problem.

    With `slow` False, readings in a shape only ingest's (pandas) typing reads give None
    for the problems instead: the caller runs the check again where it may take a while."""
    channels = {c.name: c for c in catalog.channels.values()}
    known = [*KEY_COLUMNS, *reading_columns(catalog)]
    required = file_required_columns(catalog)
    problems: list[Problem] = []
    records: list[dict[str, Any]] = []
    for row, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            kind = "array" if isinstance(item, list) else type(item).__name__
            problems.append(Problem(row, None, f"row {row} is a JSON {kind}, not an object"))
            records.append({})
            continue
        record: dict[str, Any] = {}
        for key, value in item.items():
            name = str(key).strip().lower()
            if name == "ts" and "timestamp" not in item:
                name = "timestamp"
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(Problem(row, name, f"{name!r} is not a field of a reading{hint}"))
                continue
            record[name] = value
        for name in required:
            if record.get(name) is None:
                problems.append(Problem(row, name, f"{name} is required but missing"))
        records.append(record)
    if all(not r for r in records):
        return records, problems
    now = now or datetime.now(UTC)
    typed = _quick_problems(records, channels, catalog, settings, now)
    if typed is None:
        if not slow:
            return records, None
        typed = _typed_problems(records, channels, catalog, settings, now)
    problems += typed
    problems.sort(key=lambda p: p.row or 0)
    return records, problems


def _typed_problems(records, channels, catalog, settings, now) -> list[Problem]:
    """Type the records as ingest does and name what it would quarantine."""
    # Ingest's pandas typing, loaded at its first use: an API that only ever sees plain
    # readings (the quick check) never loads pandas, ~80 MB of its memory.
    import pandas as pd

    from emps.ingest.parse import ROW
    from emps.ingest.validate import FILE, prepare, suite_parameters

    raw = pd.DataFrame.from_records(
        [{**r, FILE: 0, ROW: n} for n, r in enumerate(records, start=1)]
    )
    sensors = reading_columns(catalog)
    prepared = prepare(raw, sensors, settings.ingest.naive_timestamps_utc)
    frame = prepared.frame
    bounds = suite_parameters(settings, now)
    counter_clock = counts_usage(catalog)
    found: list[Problem] = []
    for index in frame.index:
        row = int(frame.at[index, ROW])
        if not records[index]:
            continue
        for text in prepared.problems.get(int(index), []):
            found.append(Problem(row, text.split(" ", 1)[0], text))
        ident = frame.at[index, "equipment_id"]
        if isinstance(ident, str) and not re.match(EQUIPMENT_ID_PATTERN, ident):
            found.append(
                Problem(
                    row,
                    "equipment_id",
                    f"equipment_id {ident[:60]!r} is not a valid id (letters, digits and _.:-, "
                    "at most 64 characters)",
                )
            )
        ts = frame.at[index, "ts"]
        if pd.isna(ts):
            if "timestamp" in records[index] and records[index]["timestamp"] is not None:
                why = prepared.ts_problem.at[index] if prepared.ts_problem is not None else None
                found.append(Problem(row, "timestamp", why or "timestamp is unreadable"))
            elif not (counter_clock and records[index].get(COUNTER) is not None):
                found.append(Problem(row, "timestamp", "timestamp is required but missing"))
        else:
            found += _time_problems(row, ts, bounds, settings)
        for name in sensors:
            if name not in records[index] or records[index][name] is None:
                continue
            value = records[index][name]
            booleans = prepared.booleans.get(name)
            bad = prepared.bad_number.get(name)
            number = frame.at[index, name]
            if booleans is not None and bool(booleans.at[index]):
                found.append(
                    Problem(
                        row,
                        name,
                        f"{name} value {str(value).lower()} is a boolean (true/false), not a "
                        "number",
                    )
                )
            elif (bad is not None and bool(bad.at[index])) or not math.isfinite(number):
                found.append(
                    Problem(row, name, f"{name} value {str(value)[:60]!r} is not a number")
                )
            else:
                found += _number_problems(row, name, number, channels)
    return found


def _quick_problems(records, channels, catalog, settings, now) -> list[Problem] | None:
    """The problems of readings in the shape nearly every device sends (a plain id, an
    ISO-8601 time with its offset, JSON numbers), found without pandas: what a request costs is
    mostly this check. None when any reading takes another shape (text numbers, epochs, naive
    times, ...), which `_typed_problems` reads the way ingest does. Both give the same words."""
    sensors = reading_columns(catalog)
    bounds = reading_time_bounds(settings, now)
    found: list[Problem] = []
    for row, record in enumerate(records, start=1):
        if not record:
            continue
        ident = record.get("equipment_id")
        if not isinstance(ident, str) or not _PLAIN_ID.fullmatch(ident):
            return None
        text = record.get("timestamp")
        if text is None:
            if not (counts_usage(catalog) and record.get(COUNTER) is not None):
                found.append(Problem(row, "timestamp", "timestamp is required but missing"))
        else:
            if not isinstance(text, str) or not STRICT_TIMESTAMP.fullmatch(text):
                return None
            try:
                ts = datetime.fromisoformat(text).astimezone(UTC)
            except ValueError:
                return None
            found += _time_problems(row, ts, bounds, settings)
        for name in sensors:
            value = record.get(name)
            if value is None:
                continue
            if type(value) not in (int, float) or not math.isfinite(value):
                return None
            found += _number_problems(row, name, float(value), channels)
    return found


def _time_problems(row: int, ts, bounds: dict, settings: Settings) -> list[Problem]:
    if ts > bounds["max_ts"]:
        return [
            Problem(
                row,
                "timestamp",
                f"timestamp {ts.isoformat()} is more than "
                f"{settings.ingest.future_tolerance_min} minutes in the future",
            )
        ]
    if ts < bounds["min_ts"]:
        return [
            Problem(
                row,
                "timestamp",
                f"timestamp {ts.isoformat()} is older than the "
                f"{settings.ingest.max_age_days}-day retention period",
            )
        ]
    return []


def _number_problems(row: int, name: str, number: float, channels: dict) -> list[Problem]:
    if name == COUNTER:
        if number < 0:
            return [Problem(row, name, f"{COUNTER} value {number:g} is not a usage count")]
        return []
    low, high = channels[name].valid_range
    if low <= number <= high:
        return []
    return [
        Problem(
            row,
            name,
            f"{name} value {number:g} is outside the valid range "
            f"{low:g}..{high:g} {channels[name].unit}",
        )
    ]


def ndjson_lines(records: list[dict[str, Any]]) -> list[bytes]:
    """One drop-file line per reading, in the order sent."""
    return [
        json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_plain).encode()
        for record in records
    ]


def _plain(value: Any) -> Any:
    if type(value).__module__ == "numpy":  # a numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON")
