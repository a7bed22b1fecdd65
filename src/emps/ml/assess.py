"""Whether a prediction can be trusted: `ok`, `settling`, `insufficient_data` or
`out_of_distribution`, with the reason in a technician's words.

A forest always answers, and a machine whose sensors stick or fall silent looks like a quiet,
healthy one: without this, "LOW" would mean "healthy" and "we cannot tell" alike. The checks read
the feature row the prediction was made from and what the model saw in training
(`profile_training_rows`), so what is normal for a fleet comes from its own data:

- settling: the machine was serviced or repaired less than its longest feature window ago, so
  the windows still mix readings from before the work with readings after it (a repaired
  machine would otherwise go on reading as the failing one it was). The alert rules open or
  raise no alert on a settling prediction, and the evaluation counts none (`settling_rows`);
- insufficient_data: most of the longest window has no readings; a sensor of the type has no
  reading over the shortest window (unless it is often absent in training); a sensor is stuck
  (no change at all over the shortest window, unless training shows it often flat); no baseline
  yet (the machine is new to the platform);
- out_of_distribution: a sensor's level lies far outside every level seen in training (a broken
  sensor reading zero, a unit mix-up).

Severity keeps its four bands whatever the assessment: the assessment is shown beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import pandas as pd

from emps.catalog import Catalog, EquipmentType
from emps.domain import SETTLING

OK = "ok"
INSUFFICIENT_DATA = "insufficient_data"
OUT_OF_DISTRIBUTION = "out_of_distribution"
ASSESSMENTS = (OK, SETTLING, INSUFFICIENT_DATA, OUT_OF_DISTRIBUTION)
# The feature holding the clock units since the last service, repair, commissioning or first
# reading (emps.catalog.ROW_FEATURES).
SINCE_SERVICE = "since_maintenance"

# Share of a window's slots without readings from which the features rest on too few readings.
MAX_MISSING_SHARE = 0.5
# A sensor absent (or flat) in more than this share of a type's training rows is normal there.
USUAL_SHARE = 0.05
# How far beyond the training range a level must lie, in training ranges, to be out of it.
OOD_MARGIN = 0.5
# The level features checked against the training range.
LEVEL_SUFFIXES = ("now", "mean_w1")
# A sensor whose slot levels vary less than this (norm standard deviations) over the shortest
# window is flat: the running sums behind the feature leave ~1e-7 of rounding on a constant.
FLAT = 1e-3


@dataclass(frozen=True)
class Assessment:
    state: str
    reason: str | None = None


class TrainingProfile(TypedDict, total=False):
    """What a model saw in training (`profile_training_rows`); `assess_matrix` reads a part
    that is missing as empty."""

    # Per type and sensor: the share of rows without a reading over the shortest window ...
    absent: dict[str, dict[str, float]]
    # ... and the share with no change over it.
    flat: dict[str, dict[str, float]]
    # Per level feature: the lowest and the highest value.
    low: dict[str, float]
    high: dict[str, float]


def _column(names: list[str], name: str) -> int | None:
    try:
        return names.index(name)
    except ValueError:
        return None


def longest_window_units(etype: EquipmentType) -> float:
    """The type's longest feature window in its clock units (hours, or the counter's unit): the
    unit `since_maintenance` is told in."""
    return etype.features.windows[-1] * etype.slot_seconds / etype.clock.unit_seconds


def _ago(etype: EquipmentType, units: float) -> str:
    """Clock units as a technician reads them: '35 min', '5.5 h', '12 cycles'."""
    if etype.clock.kind != "time":
        return f"{units:.3g} {etype.clock.unit}{'' if units == 1 else 's'}"
    return f"{units * 60:.0f} min" if units < 1 else f"{units:.1f} h"


def settling_rows(since_service: np.ndarray, types: np.ndarray, catalog: Catalog) -> np.ndarray:
    """Per row: serviced or repaired less than its type's longest window ago (NaN: no)."""
    since = np.asarray(since_service, dtype=np.float64)
    types = np.asarray(types, dtype=object)
    settling = np.zeros(len(since), dtype=bool)
    for type_name in pd.unique(types):
        etype = catalog.equipment_types.get(type_name)
        if etype is not None:
            mine = types == type_name
            settling[mine] = since[mine] < longest_window_units(etype)
    return settling


def profile_training_rows(
    frame: pd.DataFrame, feature_names: list[str], catalog: Catalog
) -> TrainingProfile:
    """What the assessment compares a row with, from the training rows: each level feature's
    range, and per type and sensor how often it is absent or flat there."""
    absent: dict[str, dict[str, float]] = {}
    flat: dict[str, dict[str, float]] = {}
    types = frame["equipment_type"] if "equipment_type" in frame else pd.Series("", frame.index)
    for type_name in catalog.type_names:
        rows = frame[types == type_name]
        if rows.empty:
            continue
        absent[type_name], flat[type_name] = {}, {}
        for sensor in catalog.type_sensors(type_name):
            mean = rows.get(f"{sensor}_mean_w1")
            std = rows.get(f"{sensor}_std_w1")
            if mean is None or std is None:
                continue
            absent[type_name][sensor] = float(mean.isna().mean())
            flat[type_name][sensor] = float((std.abs() <= FLAT).mean())
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for name in feature_names:
        of_sensor, rest = catalog.feature_sensor(name)
        if of_sensor is None or rest not in LEVEL_SUFFIXES or name not in frame:
            continue
        values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isfinite(values).any():
            low[name], high[name] = float(np.nanmin(values)), float(np.nanmax(values))
    return {"absent": absent, "flat": flat, "low": low, "high": high}


def assess_matrix(
    X: np.ndarray,
    types: np.ndarray,
    feature_names: list[str],
    catalog: Catalog,
    profile: TrainingProfile | None = None,
    feature_labels: dict[str, list[str | None]] | None = None,
) -> list[Assessment]:
    """One assessment per row of the feature matrix X (columns: feature_names) of equipment of
    `types`; `profile` is the model's training profile (None: a model trained before profiles,
    judged on the insufficient-data checks alone)."""
    profile = profile or {}
    labels = feature_labels or {}
    results: list[Assessment | None] = [None] * len(X)

    def unassessed(rows: np.ndarray) -> list[int]:
        """Those of `rows` no earlier check has assessed: a row is told the first that holds."""
        return [int(i) for i in np.flatnonzero(rows) if results[i] is None]

    def flag(rows: np.ndarray, state: str, reason: str) -> None:
        for i in unassessed(rows):
            results[i] = Assessment(state, reason)

    types = np.asarray(types, dtype=object)
    for type_name in pd.unique(types):
        etype = catalog.equipment_types.get(type_name)
        if etype is None:
            continue
        mine = types == type_name
        shortest, longest = etype.window_label(1), etype.window_label(len(etype.features.windows))
        baselines = [
            j
            for sensor in catalog.type_sensors(type_name)
            if (j := _column(feature_names, f"{sensor}_dev_lag")) is not None
        ]
        no_baseline = (
            np.isnan(X[:, baselines]).all(axis=1) if baselines else np.zeros(len(X), dtype=bool)
        )
        since = _column(feature_names, SINCE_SERVICE)
        if since is not None:
            # A new machine (no baseline yet) has no "before" to mix in: it is told as such below.
            since_units = X[:, since]
            for i in unassessed(mine & ~no_baseline & settling_rows(since_units, types, catalog)):
                results[i] = Assessment(
                    SETTLING,
                    f"serviced or repaired {_ago(etype, since_units[i])} ago: its last {longest} "
                    "still hold readings from before that",
                )
        missing = _column(feature_names, "missing_rate")
        if missing is not None:
            share = X[:, missing]
            for i in unassessed(mine & (share > MAX_MISSING_SHARE)):
                results[i] = Assessment(
                    INSUFFICIENT_DATA, f"{share[i]:.0%} of the last {longest} without readings"
                )
        absent = profile.get("absent", {}).get(type_name, {})
        flat = profile.get("flat", {}).get(type_name, {})
        for sensor in catalog.type_sensors(type_name):
            mean = _column(feature_names, f"{sensor}_mean_w1")
            std = _column(feature_names, f"{sensor}_std_w1")
            name = sensor.replace("_", " ")
            if mean is not None and absent.get(sensor, 0.0) <= USUAL_SHARE:
                flag(
                    mine & np.isnan(X[:, mean]),
                    INSUFFICIENT_DATA,
                    f"no {name} readings over the last {shortest}",
                )
            if std is not None and mean is not None and flat.get(sensor, 0.0) <= USUAL_SHARE:
                flag(
                    mine & ~np.isnan(X[:, mean]) & (np.abs(X[:, std]) <= FLAT),
                    INSUFFICIENT_DATA,
                    f"{name} stuck: no change over the last {shortest}",
                )
        if baselines:
            flag(
                mine & no_baseline,
                INSUFFICIENT_DATA,
                f"no baseline yet: the machine needs {etype.span_label(etype.features.baseline)} "
                "of readings first",
            )
    for name, low in profile.get("low", {}).items():
        j = _column(feature_names, name)
        if j is None:
            continue
        high = profile["high"][name]
        margin = OOD_MARGIN * max(high - low, 1.0)
        values = X[:, j]
        outside = ~np.isnan(values) & ((values < low - margin) | (values > high + margin))
        label = (labels.get(name) or [name.replace("_", " ")])[0]
        for i in unassessed(outside):
            results[i] = Assessment(
                OUT_OF_DISTRIBUTION,
                f"{label} {values[i]:.3g} far outside what training saw ({low:.3g} to {high:.3g})",
            )
    return [r or Assessment(OK) for r in results]
