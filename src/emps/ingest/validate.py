"""Typing raw records and validating them with the Great Expectations suite in expectations/.

The suite is generated from the sensor catalog (`build_suite`) and committed as JSON; the ingest
run loads it, runs it once per batch of rows on a typed pandas frame and turns each failed
expectation's row indices into reasons a device owner can read.

Great Expectations takes ~10 s to import, so it is imported on first use and one context and
validation definition are built per process (`SuiteRunner`), never per file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emps.catalog import Catalog
from emps.ingest.columns import (
    COUNTER,
    EQUIPMENT_ID_PATTERN,
    reading_channels,
    reading_time_bounds,
    required_everywhere,
)
from emps.ingest.parse import KIND, PROBLEM, ROW
from emps.ingest.timestamps import parse_timestamps
from emps.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from great_expectations import ValidationDefinition

log = logging.getLogger(__name__)

SUITE_NAME = "sensor_readings"
SUITE_PATH = PROJECT_ROOT / "expectations" / f"{SUITE_NAME}.json"
SHIPPED_CATALOG = PROJECT_ROOT / "catalog" / "sensors.yaml"
FILE = "ingest_file_id"


# -- the suite -------------------------------------------------------------------------------


def build_suite(catalog: Catalog) -> dict[str, Any]:
    """The expectation suite for one batch of typed readings, as GX 1.x suite JSON.

    Run-time values come in as suite parameters: `min_ts` / `max_ts` (retention age and future
    tolerance, from settings).
    """

    def expectation(kind: str, why: str, **kwargs) -> dict[str, Any]:
        return {"type": kind, "kwargs": kwargs, "meta": {"why": why}}

    expectations = [
        expectation(
            "expect_column_values_to_not_be_null",
            "every reading names its equipment",
            column="equipment_id",
        ),
        expectation(
            "expect_column_values_to_match_regex",
            "equipment ids are letters, digits and _.:- (as raw.equipment accepts)",
            column="equipment_id",
            regex=EQUIPMENT_ID_PATTERN,
        ),
        # Registration is a lookup in raw.equipment done while typing the batch; a value_set of
        # 10,000 ids would make GX copy and serialise that list dozens of times per run.
        expectation(
            "expect_column_values_to_be_in_set",
            "readings only for equipment registered in raw.equipment "
            "(equipment_registered is looked up at ingest time)",
            column="equipment_registered",
            value_set=[True],
        ),
        expectation(
            "expect_column_values_to_not_be_null",
            "every reading has a timestamp with a UTC offset or epoch seconds",
            column="ts",
        ),
        expectation(
            "expect_column_values_to_be_between",
            "not older than the retention period, not in the future beyond the tolerance",
            column="ts",
            min_value={"$PARAMETER": "min_ts"},
            max_value={"$PARAMETER": "max_ts"},
        ),
        expectation(
            "expect_compound_columns_to_be_unique",
            "one reading per equipment and timestamp within a file",
            column_list=[FILE, "equipment_id", "ts"],
        ),
    ]
    everywhere = {channel.name for channel in required_everywhere(catalog)}
    for sensor in reading_channels(catalog):
        low, high = sensor.valid_range
        expectation_for = f"{sensor.name} ({sensor.unit})"
        if sensor.name in everywhere:
            expectations.append(
                expectation(
                    "expect_column_values_to_not_be_null",
                    f"{expectation_for} is required on every reading",
                    column=sensor.name,
                )
            )
        expectations.append(
            expectation(
                "expect_column_values_to_be_between",
                f"{expectation_for} is a number within its physically possible range",
                column=sensor.name,
                min_value=float(low),
                max_value=float(high),
            )
        )
    expectations.append(
        expectation(
            "expect_column_values_to_be_between",
            f"{COUNTER} (a usage counter: cycles, operating hours) is a number from 0",
            column=COUNTER,
            min_value=0.0,
            max_value=1e15,
        )
    )
    return {
        "name": SUITE_NAME,
        "expectations": expectations,
        "meta": {
            "generated_from": "catalog/sensors.yaml",
            "catalog_checksum": catalog.checksum,
            "regenerate_with": "emps quality suite --write",
        },
    }


def suite_json(catalog: Catalog) -> str:
    return json.dumps(build_suite(catalog), indent=2, ensure_ascii=False) + "\n"


def load_suite(catalog: Catalog, path: Path = SUITE_PATH) -> dict[str, Any]:
    """The committed suite; regenerated in memory (with a warning) when the catalog moved on."""
    if path.exists():
        committed = json.loads(path.read_text(encoding="utf-8"))
        if committed.get("meta", {}).get("catalog_checksum") == catalog.checksum:
            return committed
        log.warning(
            "%s was generated from another version of the sensor catalog; validating with a "
            "suite generated now. Run `emps quality suite --write` and commit the result.",
            path.name,
        )
    return build_suite(catalog)


# -- typing raw records ----------------------------------------------------------------------


@dataclass
class Prepared:
    """A batch of rows ready for the suite: typed `frame`, the `raw` values, parse problems
    (row -> reasons) and their kinds, and per column the rows whose value was refused."""

    frame: pd.DataFrame
    raw: pd.DataFrame
    problems: dict[int, list[str]] = field(default_factory=dict)
    ts_problem: pd.Series | None = None
    bad_number: dict[str, pd.Series] = field(default_factory=dict)
    booleans: dict[str, pd.Series] = field(default_factory=dict)
    kinds: dict[int, str] = field(default_factory=dict)


def prepare(raw: pd.DataFrame, sensors: list[str], naive_as_utc: bool) -> Prepared:
    """Type a batch of raw rows (from one or many files): ids as text, UTC timestamps, floats.

    Values that are not numbers (text, NaN, inf, JSON true/false) become +inf so the range
    expectation rejects them; the reason shown uses the raw value. Rows the parser could not
    read (`_problem`) are carried as problems and not typed further.
    """
    raw = raw.reset_index(drop=True)
    frame = pd.DataFrame(index=raw.index)
    frame[FILE] = raw[FILE].astype("int64")
    frame[ROW] = raw[ROW].astype("int64")
    problems: dict[int, list[str]] = {}
    kinds: dict[int, str] = {}
    if PROBLEM in raw.columns:
        found = raw[PROBLEM].notna()
        kind = raw[KIND] if KIND in raw.columns else pd.Series("malformed", index=raw.index)
        for index, text in raw.loc[found, PROBLEM].items():
            problems[int(index)] = [str(text)]
            kinds[int(index)] = str(kind.at[index])
    booleans: dict[str, pd.Series] = {}
    ids, refused = _text(raw, "equipment_id")
    frame["equipment_id"] = ids
    _refuse(problems, refused, "equipment_id")
    ts_text, refused = _text(raw, "timestamp")
    _refuse(problems, refused, "timestamp")
    ts, ts_problem = parse_timestamps(ts_text, naive_as_utc)
    frame["ts"] = ts

    bad_number: dict[str, pd.Series] = {}
    for sensor in sensors:
        if sensor not in raw.columns:
            frame[sensor] = np.nan
            continue
        values = raw[sensor]
        if pd.api.types.is_bool_dtype(values.dtype):
            values = values.astype(object)
        if pd.api.types.is_numeric_dtype(values.dtype):
            numbers = values.astype("float64")
            present = numbers.notna()
        else:
            is_bool = values.map(_is_bool, na_action="ignore").fillna(False).astype(bool)
            if is_bool.any():
                booleans[sensor] = is_bool
                values = values.mask(is_bool, "boolean")
            numbers = pd.to_numeric(values, errors="coerce").astype("float64")
            present = values.notna() & values.astype("str").str.strip().ne("")
        bad = present & ~np.isfinite(numbers)
        if bad.any():
            numbers = numbers.mask(bad, np.inf)
            bad_number[sensor] = bad
        frame[sensor] = numbers
    return Prepared(frame, raw, problems, ts_problem, bad_number, booleans, kinds)


def apply_clocks(prepared: Prepared, types: dict[str, str], catalog: Catalog) -> None:
    """What each equipment's type asks of its rows: a counter-clocked type's rows carry their
    counter (`cycle`), and without a timestamp stand at start + cycle x interval (`ts_derived`:
    not wall time, so the age and future rules do not apply); a channel required by a type is
    present on its rows. Rows that fail are added to the problems, naming the field."""
    frame = prepared.frame
    kind = frame["equipment_id"].map(types)
    frame["ts_derived"] = False
    everywhere = {channel.name for channel in required_everywhere(catalog)}
    typed_required = [c.name for c in reading_channels(catalog) if c.required]
    for type_name, etype in catalog.equipment_types.items():
        rows = kind.eq(type_name).to_numpy()
        if not rows.any():
            continue
        for channel in typed_required:
            if channel in everywhere or channel not in etype.channels:
                continue
            for index in frame.index[rows & frame[channel].isna().to_numpy()]:
                prepared.problems.setdefault(int(index), []).append(
                    f"{channel} is required on {type_name} readings but missing"
                )
        if etype.clock.kind != "counter":
            continue
        cycle = frame[COUNTER]
        for index in frame.index[rows & cycle.isna().to_numpy()]:
            prepared.problems.setdefault(int(index), []).append(
                f"{COUNTER} is missing: {type_name} equipment counts its life in "
                f"{etype.clock.unit}s, and each of its readings carries the count"
            )
        derive = (
            rows
            & frame["ts"].isna().to_numpy()
            & np.isfinite(cycle.to_numpy())
            & (cycle.to_numpy() >= 0)
        )
        if derive.any():
            start = pd.Timestamp(etype.clock.start)
            frame.loc[derive, "ts"] = start + pd.to_timedelta(
                cycle[derive] * etype.clock.interval_s, unit="s"
            )
            frame.loc[derive, "ts_derived"] = True
            if prepared.ts_problem is not None:
                prepared.ts_problem = prepared.ts_problem.mask(derive)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _refuse(problems: dict[int, list[str]], refused: pd.Series, column: str) -> None:
    for index, value in refused.items():
        problems.setdefault(int(index), []).append(
            f"{column} {_show(value)} is a JSON {_json_type(value)}; send it as text"
        )


def _json_type(value: Any) -> str:
    if _is_bool(value):
        return "boolean"
    return "number" if isinstance(value, int | float | np.number) else type(value).__name__


def mark_registered(frame: pd.DataFrame, known: set[str]) -> None:
    """Add `equipment_registered`: True/False per row, None where the id is missing."""
    ids = frame["equipment_id"]
    flag = ids.isin(known).astype(object)
    flag[ids.isna()] = None
    frame["equipment_registered"] = flag


def _text(raw: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """The column as stripped text (empty = missing), and the values refused: JSON booleans,
    and numbers other than whole ones for an id (a float id is a typing accident)."""
    if column not in raw.columns:
        return pd.Series(np.nan, index=raw.index, dtype="str"), pd.Series(dtype=object)
    values = raw[column]
    refused = pd.Series(dtype=object)
    if values.dtype == object:
        kind = values.map(type, na_action="ignore")
        odd = kind.notna() & ~kind.isin([str])
        if odd.any():
            wrong = values[odd].map(
                lambda v: _is_bool(v) or (column == "equipment_id" and isinstance(v, float))
            )
            refused = values[odd][wrong.astype(bool)]
            values = values.mask(values.index.isin(refused.index), None)
    text = values.astype("str").str.strip()
    text = text.mask(values.isna() | text.eq(""))
    return text, refused


# -- running the suite -----------------------------------------------------------------------


@dataclass
class Failure:
    """One expectation that failed on a batch and the frame rows it failed on."""

    kind: str
    kwargs: dict[str, Any]
    rows: list[int]


class SuiteRunner:
    """One Great Expectations context + validation definition, reused for every batch."""

    def __init__(self, suite: dict[str, Any]):
        self.suite = suite
        self._validation: ValidationDefinition | None = None

    def _build(self) -> ValidationDefinition:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("drops").add_dataframe_asset("sensor_readings")
        batch = asset.add_batch_definition_whole_dataframe("batch")
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=self.suite["name"],
                expectations=self.suite["expectations"],
                meta=self.suite.get("meta"),
            )
        )
        return context.validation_definitions.add(
            gx.ValidationDefinition(name="ingest", data=batch, suite=suite)
        )

    def _build_once(self) -> ValidationDefinition:
        if self._validation is None:
            self._validation = self._build()
        return self._validation

    def run(
        self, frame: pd.DataFrame, parameters: dict[str, Any]
    ) -> tuple[list[Failure], dict[str, Any]]:
        """Validate `frame` (a RangeIndex frame); returns failures and the JSON-able result."""
        result = self._build_once().run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            result_format={"result_format": "COMPLETE"},
        )
        failures = []
        for item in result.results:
            if item.success:
                continue
            config = item.expectation_config
            indices = item.result.get("unexpected_index_list")
            if indices is None:
                raise RuntimeError(
                    f"expectation {config.type} failed without row indices: "
                    f"{item.exception_info or item.result}"
                )
            rows = [int(i) if not isinstance(i, dict) else int(i["index"]) for i in indices]
            failures.append(Failure(config.type, dict(config.kwargs), rows))
        return failures, result.to_json_dict()


def suite_parameters(settings: Settings, now: datetime) -> dict[str, Any]:
    return {k: pd.Timestamp(v) for k, v in reading_time_bounds(settings, now).items()}


# -- reasons ---------------------------------------------------------------------------------


def row_reasons(
    prepared: Prepared,
    failures: list[Failure],
    catalog: Catalog,
    settings: Settings,
    parameters: dict[str, Any],
) -> dict[int, list[str]]:
    """Frame row -> reasons in plain words, each naming the field, the value and the rule."""
    reasons: dict[int, list[str]] = defaultdict(list)
    for index, texts in prepared.problems.items():
        reasons[index].extend(texts)
    derived = prepared.frame.get("ts_derived")
    for failure in failures:
        column = failure.kwargs.get("column")
        tag = f" [{failure.kind}]"
        for row in failure.rows:
            if (
                column == "ts"
                and failure.kind == "expect_column_values_to_be_between"
                and derived is not None
                and bool(derived.at[row])
            ):
                continue  # counter time (start + cycle x interval) is not wall time
            reasons[row].append(
                _reason(failure, column, row, prepared, catalog, settings, parameters) + tag
            )
    return dict(reasons)


def _reason(
    failure: Failure,
    column: str | None,
    row: int,
    prepared: Prepared,
    catalog: Catalog,
    settings: Settings,
    parameters: dict[str, Any],
) -> str:
    kind = failure.kind
    frame, raw = prepared.frame, prepared.raw
    if column in ("equipment_id", "equipment_registered"):
        value = frame.at[row, "equipment_id"]
        if kind == "expect_column_values_to_not_be_null":
            return "equipment_id is missing"
        if kind == "expect_column_values_to_match_regex":
            return (
                f"equipment_id {_show(value)} is not a valid id (letters, digits and _.:-, "
                "at most 64 characters)"
            )
        return (
            f"equipment_id {_show(value)} is not registered in raw.equipment (register it, or set "
            "EMPS_INGEST_UNKNOWN_EQUIPMENT=register)"
        )
    if column == "ts":
        if kind == "expect_column_values_to_not_be_null":
            text = prepared.ts_problem.at[row] if prepared.ts_problem is not None else None
            return text or "timestamp is missing or unreadable"
        value = frame.at[row, "ts"]
        if value > parameters["max_ts"]:
            return (
                f"timestamp {value.isoformat()} is more than "
                f"{settings.ingest.future_tolerance_min} minutes in the future"
            )
        return (
            f"timestamp {value.isoformat()} is older than the "
            f"{settings.ingest.max_age_days}-day retention period"
        )
    if kind == "expect_compound_columns_to_be_unique":
        return (
            f"equipment_id {_show(frame.at[row, 'equipment_id'])} has more than one different "
            f"reading at {frame.at[row, 'ts'].isoformat()} in this file"
        )
    if column is None:
        return f"{failure.kwargs} failed {kind}"
    if column == COUNTER:
        bad = prepared.bad_number.get(column)
        if bad is not None and bool(bad.at[row]):
            return f"{COUNTER} value {_show(raw.at[row, column])} is not a number"
        return f"{COUNTER} value {frame.at[row, column]:g} is not a usage count (0 or more)"
    sensor = {channel.name: channel for channel in reading_channels(catalog)}.get(column)
    if sensor is not None:
        if kind == "expect_column_values_to_not_be_null":
            return f"{column} is required but missing"
        booleans = prepared.booleans.get(column)
        if booleans is not None and bool(booleans.at[row]):
            return (
                f"{column} value {str(raw.at[row, column]).lower()} is a boolean (true/false), "
                "not a number; it is not read as 1 or 0"
            )
        bad = prepared.bad_number.get(column)
        if bad is not None and bool(bad.at[row]):
            return f"{column} value {_show(raw.at[row, column])} is not a number"
        low, high = sensor.valid_range
        return (
            f"{column} value {frame.at[row, column]:g} is outside the valid range "
            f"{low:g}..{high:g} {sensor.unit}"
        )
    return f"{column} failed {kind}"


def _show(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "(empty)"
    text = str(value)
    text = re.sub(r"[\x00-\x1f]", "?", text)
    return repr(text[:60] + ("…" if len(text) > 60 else ""))
