"""The catalog: the fleet's equipment types, their channels, clocks and feature grids.

One YAML file (`catalog/sensors.yaml` by default) describes the user's fleet:

- channels: every column a reading may carry, with a unit, a valid range and a role: `sensor`
  (gets features) or `setting` (an operating condition: altitude, load, throttle; used to find
  operating regimes so sensors are compared with their regime's norm, never a feature itself);
- equipment types: the channels each type has (its own subset, a healthy band per channel
  optional), its clock (wall time with an expected reading interval, or a usage counter such as
  cycles or operating hours) and its feature grid in that clock's unit: slot width, windows,
  baseline span and its lag, minimum baseline slots and failure horizon.

Table columns, the validation suite, the dbt features, the model's explicit feature list and
the dashboard's charts all derive from it. A version 1 file (one sensor list shared by every
type, wall-time clocks) is read as version 2 with a note; `emps catalog migrate` rewrites it.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emps.settings import get_settings

CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
# Columns of the pipeline a channel must not shadow, and words that name labels or pipeline
# state: a channel called `days` or `fails` would read as a label, `site` as the registry's.
RESERVED_NAMES = frozenset(
    {
        "equipment_id",
        "equipment_type",
        "equipment",
        "ts",
        "timestamp",
        "time",
        "cycle",
        "counter",
        "site",
        "unit",
        "slot",
        "regime",
        "ingest_file_id",
        "ingested_at",
        "label",
        "labels",
        "days",
        "fails",
        "failure",
        "failed",
        "next",
        "remaining",
        "life",
        "missing",
        "since",
        "target",
        "prediction",
        "severity",
        "health",
        "probability",
        "id",
    }
)
RESERVED_PREFIXES = ("fails_", "days_", "label_", "next_", "remaining_", "missing_", "since_")
# The window statistics every sensor gets, per window k: `<sensor>_<stat>_w<k>`.
WINDOW_STATS = ("mean", "std", "slope", "outside")
# Per sensor, beside the windows: the current slot's level, the shortest window's mean against
# the machine's own baseline, the longest window's mean against it, and the same against the
# machines at its site (equipment with a site only). The baseline trails the machine: its level
# over a `baseline` span ending `baseline_lag` before the slot (its first span while younger).
SENSOR_FEATURES = ("now", "dev_lag", "drift_lag", "site_drift_lag")
# Per row, for every type: the share of empty slots of the longest window, the time since
# the last service (or commissioning, or first reading) and the time since the end of the span
# its baseline features compare with (under the lag while a young machine is still compared
# with its first span: the model tells that reference from the trailing one), both in the
# type's clock unit.
ROW_FEATURES = ("missing_rate", "since_maintenance", "baseline_age")
# A slot's level beyond this many norm standard deviations counts as outside.
OUTSIDE_SIGMAS = 3.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
_SECONDS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
DEFAULT_TIME_FEATURES = {
    "slot": "10 min",
    "windows": ["1 h", "6 h", "24 h"],
    "baseline": "24 h",
    "baseline_min_slots": 6,
    "horizon": "7 d",
}
# The baseline's lag when a wall-time type declares none, in failure horizons: the baseline
# predates a fault that shows up to a horizon before its failure, with days to spare for the
# warning, while sensor wander and recalibration over months do not pile up. Measured against
# one horizon on the realistic simulated fleet: as few false alerts, no fewer failures warned.
# A counter-clocked type declaring none keeps its first span (BASELINE_FIRST): its clock counts
# use, not days, so its history is a record of wear since new or overhaul (engines run from
# overhaul to failure), and the wear since then is its signal, not a sensor's calendar wander.
BASELINE_LAG_HORIZONS = 2.0
BASELINE_FIRST = "first"
DEFAULT_INTERVAL = "1 min"
DEFAULT_COUNTER_START = "2000-01-01T00:00:00+00:00"


class CatalogError(ValueError):
    """The catalog cannot be used; the message names the file, line and field of each problem."""


def parse_duration(value: object, field: str) -> int:
    """Seconds in a duration such as '10 min', '1h', '7 d' (whole seconds)."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"{field}: {value!r} is not a duration; write it with its unit, e.g. '10 min', "
            "'1 h' or '7 d'"
        )
    match = _DURATION.match(value)
    if not match or match[2].lower() not in _SECONDS:
        raise ValueError(
            f"{field}: {value!r} is not a duration; write a number and a unit "
            f"({', '.join(['s', 'min', 'h', 'd', 'w'])}), e.g. '10 min'"
        )
    seconds = float(match[1]) * _SECONDS[match[2].lower()]
    if seconds <= 0 or seconds != int(seconds):
        raise ValueError(f"{field}: {value!r} must be a positive whole number of seconds")
    return int(seconds)


def format_duration(seconds: float) -> str:
    """'10 min', '24 h', '7 d': the largest unit that divides the duration."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        # Days from two on: '24 h' reads better than '1 d' for a window.
        if seconds >= max(size, 2 * size if unit == "d" else size) and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


class Channel(BaseModel):
    """A column readings may carry: a sensor (features) or an operating setting (regimes)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    unit: str
    description: str = ""
    valid_range: tuple[float, float]
    required: bool = False
    role: Literal["sensor", "setting"] = "sensor"

    @field_validator("name")
    @classmethod
    def _name_is_a_column(cls, name: str) -> str:
        if not CHANNEL_NAME.match(name):
            raise ValueError(
                f"channel name {name!r} must start with a lower-case letter and hold only "
                "lower-case letters, digits and '_' (at most 41 characters): it becomes a column"
            )
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            raise ValueError(
                f"channel name {name!r} is reserved: the pipeline uses it for equipment, time, "
                "labels or its own state (reserved: "
                f"{', '.join(sorted(RESERVED_NAMES))}; prefixes {', '.join(RESERVED_PREFIXES)}); "
                "rename the channel, e.g. with its unit or part"
            )
        return name

    @model_validator(mode="after")
    def _range_ordered(self) -> Channel:
        low, high = self.valid_range
        if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
            raise ValueError(
                f"channel {self.name!r}: valid_range low {low} must be below high {high}"
            )
        return self


# Kept for readers of the version 1 vocabulary.
Sensor = Channel


class Clock(BaseModel):
    """How an equipment type counts its life: wall time, or a usage counter (cycles, operating
    hours). Counter readings carry the counter in `cycle`; without a timestamp, one is derived
    as start + counter x interval, so partitions and the ingest ledger keep working."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["time", "counter"] = "time"
    # time: the expected reading interval; counter: the nominal time one counter unit takes.
    interval_s: int
    # counter: what one unit is called (cycle, operating hour); time: always hour.
    unit: str = "hour"
    start: datetime | None = None

    @property
    def unit_seconds(self) -> float:
        """Seconds per clock unit: an hour for wall time, the nominal interval for a counter."""
        return 3600.0 if self.kind == "time" else float(self.interval_s)

    @property
    def life_unit(self) -> str:
        """The unit remaining life is told in: days for wall time, the counter's own unit."""
        return "day" if self.kind == "time" else self.unit

    @property
    def life_unit_seconds(self) -> float:
        return 86400.0 if self.kind == "time" else float(self.interval_s)


class FeatureGrid(BaseModel):
    """A type's feature grid: lengths in slots (every window a whole number of slots)."""

    model_config = ConfigDict(extra="forbid")

    slot: float  # slot width in clock base units: seconds (time) or counter units
    windows: tuple[int, ...]  # in slots, shortest first
    baseline: int  # in slots
    baseline_min_slots: int
    # The least number of slots between a slot and the end of the baseline span it is compared
    # with (at least 1; see fct_equipment_features), or None: always the machine's first span.
    baseline_lag: int | None
    horizon: float  # in clock base units
    regimes: int | Literal["auto"] = "auto"


class EquipmentType(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    id_prefix: str | None = Field(None, pattern=r"^[A-Z]{2,5}$")
    channels: dict[str, tuple[float, float] | None]  # channel -> healthy band (optional)
    clock: Clock
    features: FeatureGrid

    @property
    def normal(self) -> dict[str, tuple[float, float]]:
        """The healthy bands this type declares (channels without one are left out)."""
        return {name: band for name, band in self.channels.items() if band is not None}

    @property
    def slot_seconds(self) -> float:
        """Slot width in seconds of (possibly derived) time."""
        if self.clock.kind == "time":
            return self.features.slot
        return self.features.slot * self.clock.interval_s

    @property
    def horizon_seconds(self) -> float:
        if self.clock.kind == "time":
            return self.features.horizon
        return self.features.horizon * self.clock.interval_s

    @property
    def horizon_label(self) -> str:
        """The failure horizon in the type's unit: '7 d', '30 cycles'."""
        return self.span_label(self.features.horizon / self.features.slot)

    @property
    def baseline_label(self) -> str:
        """What a machine's drift is measured from: 'first 24 h', '24 h ending 14 d back'."""
        span = self.span_label(self.features.baseline)
        if self.features.baseline_lag is None:
            return f"first {span}"
        return f"{span} ending {self.span_label(self.features.baseline_lag)} back"

    def window_label(self, k: int) -> str:
        """The k-th window (1-based) in the type's unit: '24 h', '30 cycles'."""
        return self.span_label(self.features.windows[k - 1])

    def span_label(self, slots: float) -> str:
        amount = slots * self.features.slot
        if self.clock.kind == "time":
            return format_duration(amount)
        return f"{amount:g} {self.clock.unit}{'' if amount == 1 else 's'}"


class Catalog(BaseModel):
    version: int = 2
    channels: dict[str, Channel]
    equipment_types: dict[str, EquipmentType]
    source: Path | None = None
    checksum: str = ""
    notes: list[str] = Field(default_factory=list)

    # -- channels --------------------------------------------------------------------------
    @property
    def channel_names(self) -> list[str]:
        """Every reading column: sensors and settings, in catalog order."""
        return list(self.channels)

    @property
    def sensors(self) -> dict[str, Channel]:
        """The channels that get features."""
        return {n: c for n, c in self.channels.items() if c.role == "sensor"}

    @property
    def sensor_names(self) -> list[str]:
        return list(self.sensors)

    @property
    def setting_names(self) -> list[str]:
        return [n for n, c in self.channels.items() if c.role == "setting"]

    def sensor(self, name: str) -> Channel:
        return self.channels[name]

    # -- types -----------------------------------------------------------------------------
    @property
    def type_names(self) -> list[str]:
        return list(self.equipment_types)

    def envelope(self, equipment_type: str, channel: str) -> tuple[float, float] | None:
        """The healthy band of a channel on an equipment type (None when not declared)."""
        return self.equipment_types[equipment_type].channels.get(channel)

    def type_sensors(self, equipment_type: str) -> list[str]:
        etype = self.equipment_types[equipment_type]
        return [n for n in self.sensor_names if n in etype.channels]

    def type_settings(self, equipment_type: str) -> list[str]:
        etype = self.equipment_types[equipment_type]
        return [n for n in self.setting_names if n in etype.channels]

    @property
    def window_count(self) -> int:
        return len(next(iter(self.equipment_types.values())).features.windows)

    @property
    def has_sites(self) -> bool:
        """Site features exist in the schema either way; equipment without a site gets none."""
        return True

    @property
    def max_horizon_days(self) -> float:
        """The longest failure horizon of any type, in days of (derived) time."""
        return max(t.horizon_seconds for t in self.equipment_types.values()) / 86400.0

    # -- features --------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        """The model's explicit feature list, in a fixed order, built from the catalog alone."""
        names = []
        windows = range(1, self.window_count + 1)
        for sensor in self.sensor_names:
            names.append(f"{sensor}_now")
            names += [f"{sensor}_{stat}_w{k}" for k in windows for stat in WINDOW_STATS]
            names += [f"{sensor}_{name}" for name in SENSOR_FEATURES if name != "now"]
        return names + list(ROW_FEATURES)

    def feature_sensor(self, column: str) -> tuple[str | None, str]:
        """(sensor, rest) of a feature column: ('vibration', 'slope_w3'); (None, column) for the
        row features. Exact: the feature list is built from the catalog, never a prefix match."""
        for sensor in self.sensor_names:
            for rest in self._sensor_suffixes():
                if column == f"{sensor}_{rest}":
                    return sensor, rest
        return None, column

    def _sensor_suffixes(self) -> list[str]:
        windows = range(1, self.window_count + 1)
        return [
            *[name for name in SENSOR_FEATURES],
            *[f"{stat}_w{k}" for k in windows for stat in WINDOW_STATS],
        ]

    # -- checks ----------------------------------------------------------------------------
    @model_validator(mode="after")
    def _types_are_consistent(self) -> Catalog:
        if not self.sensors:
            raise ValueError("channels: declare at least one channel with role sensor")
        counts = {name: len(t.features.windows) for name, t in self.equipment_types.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(
                "every equipment type must declare the same number of feature windows (one "
                f"model reads them all as w1, w2, ...): {counts}"
            )
        for type_name, etype in self.equipment_types.items():
            where = f"equipment_types.{type_name}"
            unknown = [c for c in etype.channels if c not in self.channels]
            if unknown:
                raise ValueError(
                    f"{where}.channels: {', '.join(unknown)} not declared under channels "
                    f"(declared: {', '.join(self.channels)})"
                )
            if not any(self.channels[c].role == "sensor" for c in etype.channels):
                raise ValueError(f"{where}.channels: the type has no sensor channel")
            for channel, band in etype.channels.items():
                if band is None:
                    continue
                low, high = band
                vlow, vhigh = self.channels[channel].valid_range
                if not (vlow <= low < high <= vhigh):
                    raise ValueError(
                        f"{where}.channels.{channel}: normal band [{low}, {high}] must lie "
                        f"inside the valid range [{vlow}, {vhigh}]"
                    )
        self._feature_columns_are_unique()
        return self

    def _feature_columns_are_unique(self) -> None:
        taken = {
            "equipment_id",
            "equipment_type",
            "site",
            "ts",
            "slot",
            "cycle",
            "ingested_at",
            *ROW_FEATURES,
        }
        for channel in self.channels:
            if channel in taken:
                raise ValueError(f"channels.{channel}: collides with a pipeline column")
            taken.add(channel)
        for feature in self.feature_names()[: -len(ROW_FEATURES)]:
            if feature in taken:
                raise ValueError(
                    f"feature column {feature!r} would collide with a channel or another "
                    "feature; rename the channel"
                )
            taken.add(feature)


# -- reading the YAML ------------------------------------------------------------------------


# Where a value sits in the YAML: mapping keys and sequence indexes from the document's root.
YamlPath = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping key and sequence item."""


def _load_with_lines(text: str) -> tuple[Any, dict[YamlPath, int]]:
    lines: dict[YamlPath, int] = {}

    def walk(node: yaml.Node, path: YamlPath) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*path, index)] = item.start_mark.line + 1
                walk(item, (*path, index))

    node = yaml.compose(text, Loader=_LineLoader)
    if node is None:
        return {}, {}
    walk(node, ())
    return yaml.load(text, Loader=_LineLoader), lines


def _line_of(path: YamlPath, lines: dict[YamlPath, int]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _names(keys: set) -> str:
    """Keys as the catalog's author wrote them (YAML keys may be numbers or null)."""
    return ", ".join(sorted(map(str, keys)))


def _fields(value: object, where: str, what: str) -> dict[str, Any]:
    """The fields of a YAML mapping (none when left empty); a scalar or a list is refused."""
    if not value:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: a mapping of {what}")
    return {str(key): item for key, item in value.items()}


def _from_version_1(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A version 1 catalog (one sensor list, every type with a band for each) as version 2."""
    types = {}
    specs = _fields(raw.get("equipment_types"), "equipment_types", "type name to its fields")
    for name, value in specs.items():
        spec = _fields(value, f"equipment_types.{name}", "description, id_prefix, normal")
        where = f"equipment_types.{name}.normal"
        normal = _fields(spec.pop("normal", None), where, "sensor to its band [low, high]")
        spec["channels"] = {sensor: normal.get(sensor) for sensor in raw.get("sensors") or {}}
        types[name] = spec
    converted = {"version": 2, "channels": raw.get("sensors") or {}, "equipment_types": types}
    note = (
        "version 1 catalog read as version 2: every type has every sensor with its band, a "
        "wall-time clock and the default feature grid; `emps catalog migrate FILE` rewrites it"
    )
    return converted, [note]


def _grid(spec: dict[str, Any], clock: Clock, where: str) -> FeatureGrid:
    """The feature grid in slots from the YAML values in the clock's unit."""
    timed = clock.kind == "time"
    if timed:
        spec = {**DEFAULT_TIME_FEATURES, **spec}
        spec.setdefault("slot", DEFAULT_TIME_FEATURES["slot"])
    else:
        missing = [k for k in ("slot", "windows", "baseline", "horizon") if k not in spec]
        if missing:
            raise ValueError(
                f"{where}.features: a {clock.unit} clock has no default grid; declare "
                f"{', '.join(missing)} in {clock.unit}s (e.g. slot: 1, windows: [5, 15, 30], "
                "baseline: 20, horizon: 30)"
            )
        spec = {"baseline_min_slots": 3, **spec}
    unknown = set(spec) - {
        "slot",
        "windows",
        "baseline",
        "baseline_lag",
        "baseline_min_slots",
        "horizon",
        "regimes",
    }
    if unknown:
        raise ValueError(f"{where}.features: unknown field(s) {_names(unknown)}")

    def amount(value: object, field: str) -> float:
        if timed:
            return float(parse_duration(value, f"{where}.features.{field}"))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError(
                f"{where}.features.{field}: {value!r} must be a positive number of "
                f"{clock.unit}s (a {clock.unit} clock counts {clock.unit}s, not time)"
            )
        return float(value)

    slot = amount(spec["slot"], "slot")
    if timed and slot < clock.interval_s:
        raise ValueError(
            f"{where}.features.slot: {format_duration(slot)} is shorter than the reading "
            f"interval ({format_duration(clock.interval_s)}): most slots would be empty"
        )

    def slots(value: object, field: str) -> int:
        length = amount(value, field)
        count = length / slot
        if abs(count - round(count)) > 1e-9 or round(count) < 1:
            raise ValueError(
                f"{where}.features.{field}: {value!r} is not a whole number of slots "
                f"({spec['slot']!r} each)"
            )
        return int(round(count))

    raw_windows = spec["windows"]
    if not isinstance(raw_windows, list) or not raw_windows:
        raise ValueError(f"{where}.features.windows: a list of window lengths, shortest first")
    windows = tuple(slots(w, f"windows[{i}]") for i, w in enumerate(raw_windows))
    if list(windows) != sorted(set(windows)):
        raise ValueError(f"{where}.features.windows: lengths must rise, shortest first")
    min_slots = spec["baseline_min_slots"]
    if isinstance(min_slots, bool) or not isinstance(min_slots, int) or min_slots < 2:
        raise ValueError(f"{where}.features.baseline_min_slots: a whole number of at least 2")
    horizon = amount(spec["horizon"], "horizon")
    baseline_lag: int | None
    if spec.get("baseline_lag") == BASELINE_FIRST:
        baseline_lag = None
    elif "baseline_lag" in spec:
        baseline_lag = slots(spec["baseline_lag"], "baseline_lag")
    elif timed:
        baseline_lag = max(1, round(BASELINE_LAG_HORIZONS * horizon / slot))
    else:
        baseline_lag = None
    regimes = spec.get("regimes", "auto")
    if regimes != "auto" and (
        isinstance(regimes, bool) or not isinstance(regimes, int) or not 1 <= regimes <= 20
    ):
        raise ValueError(f"{where}.features.regimes: 'auto' or a whole number from 1 to 20")
    return FeatureGrid(
        slot=slot,
        windows=windows,
        baseline=slots(spec["baseline"], "baseline"),
        baseline_min_slots=min_slots,
        baseline_lag=baseline_lag,
        horizon=horizon,
        regimes=regimes,
    )


def _clock(value: object, where: str) -> Clock:
    spec = _fields(value, f"{where}.clock", "kind, interval, unit, start")
    kind = spec.pop("kind", "time")
    if kind not in ("time", "counter"):
        raise ValueError(f"{where}.clock.kind: 'time' or 'counter', not {kind!r}")
    unknown = set(spec) - {"interval", "unit", "start"}
    if unknown:
        raise ValueError(f"{where}.clock: unknown field(s) {_names(unknown)}")
    interval = parse_duration(spec.get("interval", DEFAULT_INTERVAL), f"{where}.clock.interval")
    if kind == "time":
        if "unit" in spec or "start" in spec:
            raise ValueError(f"{where}.clock: unit and start belong to counter clocks")
        return Clock(kind="time", interval_s=interval)
    unit = spec.get("unit", "cycle")
    if not isinstance(unit, str) or not re.match(r"^[a-z][a-z ]{0,30}$", unit):
        raise ValueError(f"{where}.clock.unit: a lower-case name such as 'cycle' or 'hour'")
    start = spec.get("start", DEFAULT_COUNTER_START)
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{where}.clock.start: {start!r} is not an ISO-8601 date-time"
            ) from None
    if not isinstance(start, datetime):
        raise ValueError(f"{where}.clock.start: an ISO-8601 date-time such as 2000-01-01T00:00Z")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return Clock(kind="counter", interval_s=interval, unit=unit, start=start)


def _band(value: object, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        unknown = set(value) - {"normal"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {_names(unknown)}")
        value = value.get("normal")
        if value is None:
            return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"{where}: a healthy band is [low, high], or leave it empty")
    low, high = float(value[0]), float(value[1])
    if low >= high:
        raise ValueError(f"{where}: band low {low} must be below high {high}")
    return low, high


def _type(name: str, value: object, channel_names: list[str]) -> EquipmentType:
    where = f"equipment_types.{name}"
    spec = _fields(value, where, "description, id_prefix, channels, clock, features")
    unknown = set(spec) - {"description", "id_prefix", "channels", "clock", "features"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {_names(unknown)}")
    raw_channels = spec.get("channels")
    if isinstance(raw_channels, list):
        raw_channels = dict.fromkeys(raw_channels)
    if not isinstance(raw_channels, dict) or not raw_channels:
        raise ValueError(
            f"{where}.channels: list the type's channels (a list of names, or a mapping of "
            f"name to its healthy band [low, high]); catalog channels: {', '.join(channel_names)}"
        )
    channels = {
        str(channel): _band(band, f"{where}.channels.{channel}")
        for channel, band in raw_channels.items()
    }
    clock = _clock(spec.get("clock"), where)
    features = _fields(
        spec.get("features"), f"{where}.features", "slot, windows, baseline, horizon"
    )
    return EquipmentType(
        name=name,
        description=spec.get("description", "") or "",
        id_prefix=spec.get("id_prefix"),
        channels=channels,
        clock=clock,
        features=_grid(features, clock, where),
    )


def _error_path(message: str) -> YamlPath:
    """The YAML path a message starts with ('equipment_types.x.features.slot: ...')."""
    head = message.split(":", 1)[0].strip()
    parts: list[str | int] = []
    for part in head.split("."):
        match = re.match(r"^([A-Za-z0-9_]+)(?:\[(\d+)\])?$", part)
        if not match:
            return ()
        parts.append(match[1])
        if match[2] is not None:
            parts.append(int(match[2]))
    return tuple(parts)


def parse_catalog(text: str, source: Path | None = None) -> Catalog:
    """The catalog in `text`; CatalogError naming the line and field of every problem."""
    name = source.name if source else "catalog"
    try:
        raw, lines = _load_with_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CatalogError(f"{name}{where}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise CatalogError(f"{name}: expected a mapping with channels and equipment_types")

    def fail(message: str, path: YamlPath) -> CatalogError:
        line = _line_of(path, lines)
        return CatalogError(f"{name}{f' line {line}' if line else ''}: {message}")

    notes: list[str] = []
    version = raw.get("version", 1)
    if version == 1 or ("sensors" in raw and "channels" not in raw):
        try:
            raw, notes = _from_version_1(raw)
        except ValueError as exc:
            raise fail(str(exc), _error_path(str(exc))) from None
    elif version != 2:
        raise CatalogError(f"{name}: version {version!r} is not supported (1 or 2)")
    unknown = set(raw) - {"version", "channels", "equipment_types"}
    if unknown:
        first = min(map(str, unknown))
        raise fail(f"unknown top-level field(s) {_names(unknown)}", (first,))

    channel_specs = raw.get("channels") or {}
    type_specs = raw.get("equipment_types") or {}
    if not isinstance(channel_specs, dict) or not channel_specs:
        raise fail("declares no channels (sensors and settings)", ("channels",))
    if not isinstance(type_specs, dict) or not type_specs:
        raise fail("declares no equipment types", ("equipment_types",))
    channels = {}
    for channel, spec in channel_specs.items():
        try:
            channels[str(channel)] = Channel(name=str(channel), **(spec or {}))
        except (ValidationError, TypeError) as exc:
            raise fail(
                f"channels.{channel}: {_first_error(exc)}", ("channels", str(channel))
            ) from None
    types = {}
    for type_name, spec in type_specs.items():
        try:
            types[str(type_name)] = _type(str(type_name), spec, list(channels))
        except ValidationError as exc:
            raise fail(
                f"equipment_types.{type_name}: {_first_error(exc)}",
                ("equipment_types", str(type_name)),
            ) from None
        except ValueError as exc:
            path = _error_path(str(exc)) or ("equipment_types", str(type_name))
            raise fail(str(exc), path) from None
    try:
        return Catalog(
            version=2,
            channels=channels,
            equipment_types=types,
            source=source,
            checksum=hashlib.sha256(text.encode()).hexdigest()[:12],
            notes=notes,
        )
    except ValidationError as exc:
        message = _first_error(exc)
        raise fail(message, _error_path(message)) from None


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        message = str(error.get("msg", exc)).removeprefix("Value error, ")
        field = ".".join(str(p) for p in error.get("loc", ()) if p != "name")
        return f"{field}: {message}" if field and not message.startswith(field) else message
    return str(exc)


@lru_cache(maxsize=8)
def _load(path: Path, mtime_ns: int) -> Catalog:
    return parse_catalog(path.read_text(encoding="utf-8"), source=path)


def load_catalog(path: Path | None = None) -> Catalog:
    """Load the catalog at `path` (default: the configured one); cached until the file changes."""
    if path is None:
        path = get_settings().catalog_path
    path = Path(path).resolve()
    return _load(path, path.stat().st_mtime_ns)


def _grid_length(amount: float, clock: Clock) -> str | float:
    """A feature grid length as the YAML gives it: a duration on a wall-time clock, a number of
    the counter's units on a counter clock."""
    return format_duration(amount) if clock.kind == "time" else amount


def catalog_yaml(catalog: Catalog) -> str:
    """The catalog written as version 2 YAML (what `emps catalog migrate` writes)."""
    channels = {}
    for name, channel in catalog.channels.items():
        spec: dict[str, Any] = {"role": channel.role, "unit": channel.unit}
        if channel.description:
            spec["description"] = channel.description
        spec["valid_range"] = list(channel.valid_range)
        spec["required"] = channel.required
        channels[name] = spec
    types = {}
    for name, etype in catalog.equipment_types.items():
        spec = {}
        if etype.description:
            spec["description"] = etype.description
        if etype.id_prefix:
            spec["id_prefix"] = etype.id_prefix
        spec["channels"] = {c: list(b) if b else None for c, b in etype.channels.items()}
        clock = etype.clock
        if clock.kind == "time":
            spec["clock"] = {"kind": "time", "interval": format_duration(clock.interval_s)}
        else:
            spec["clock"] = {
                "kind": "counter",
                "unit": clock.unit,
                "interval": format_duration(clock.interval_s),
                "start": clock.start.isoformat() if clock.start else DEFAULT_COUNTER_START,
            }
        grid = etype.features
        spec["features"] = {
            "slot": _grid_length(grid.slot, clock),
            "windows": [_grid_length(w * grid.slot, clock) for w in grid.windows],
            "baseline": _grid_length(grid.baseline * grid.slot, clock),
            "baseline_lag": (
                BASELINE_FIRST
                if grid.baseline_lag is None
                else _grid_length(grid.baseline_lag * grid.slot, clock)
            ),
            "baseline_min_slots": grid.baseline_min_slots,
            "horizon": _grid_length(grid.horizon, clock),
            "regimes": grid.regimes,
        }
        types[name] = spec
    return yaml.safe_dump(
        {"version": 2, "channels": channels, "equipment_types": types},
        sort_keys=False,
        allow_unicode=True,
    )
