"""The feature contract computed with pandas, one equipment and one slot at a time.

Written from the definitions in dbt_project/models (the model's header) and emps.catalog, with
none of their SQL: slot values are the last reading in each slot, levels are norm standard
deviations from the type's (and regime's) norm, window statistics are plain numpy over the
slots of each window. The dbt tests compare the feature table with this.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emps.catalog import OUTSIDE_SIGMAS, Catalog


def slot_values(readings: pd.DataFrame, equipment: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """One row per equipment per slot: each channel's last non-null value, the slot's last
    reading time, the equipment's type, site and commissioning."""
    frames = []
    registry = equipment.set_index("equipment_id")
    channels = [c for c in catalog.channel_names if c in readings.columns]
    for equipment_id, rows in readings.groupby("equipment_id"):
        etype = catalog.equipment_types[registry.loc[equipment_id, "equipment_type"]]
        rows = rows.sort_values("ts")
        if etype.clock.kind == "time":
            position = _epoch_seconds(rows["ts"]) / etype.features.slot
        else:
            position = rows["cycle"] / etype.features.slot
        rows = rows.assign(slot=np.floor(position).astype("int64"))
        last = rows.groupby("slot")[channels].last()  # pandas' last skips nulls
        last["ts"] = rows.groupby("slot")["ts"].max()
        last["equipment_id"] = equipment_id
        frames.append(last.reset_index())
    slots = pd.concat(frames, ignore_index=True)
    return slots.merge(equipment, on="equipment_id")


def _epoch_seconds(ts: pd.Series) -> pd.Series:
    return (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def assign_regimes(slots: pd.DataFrame, regimes: pd.DataFrame, catalog: Catalog) -> pd.Series:
    """The nearest regime centre of each slot's settings (0 for types without settings)."""
    regime = pd.Series(0, index=slots.index, dtype="int64")
    for etype, centres in regimes.groupby("equipment_type"):
        mine = slots["equipment_type"] == etype
        table = centres.pivot(index="regime", columns="setting", values="centre")
        scale = centres.groupby("setting")["scale"].first()[table.columns]
        values = slots.loc[mine, table.columns].to_numpy(dtype=float)
        distance = (((values[:, None, :] - table.to_numpy()[None]) / scale.to_numpy()) ** 2).sum(2)
        regime[mine] = table.index.to_numpy()[distance.argmin(axis=1)]
    return regime


def levels(
    slots: pd.DataFrame, catalog: Catalog, regimes: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Each slot's sensor values in norm standard deviations: a catalog band (types without
    settings) or the mean and sample standard deviation of the type's slots in that regime."""
    slots = slots.copy()
    slots["regime"] = assign_regimes(slots, regimes if regimes is not None else _none(), catalog)
    for sensor in catalog.sensor_names:
        level = pd.Series(np.nan, index=slots.index)
        for (etype, _regime), group in slots.groupby(["equipment_type", "regime"]):
            band = catalog.envelope(etype, sensor)
            if band is not None and not catalog.type_settings(etype):
                mean, std = (band[0] + band[1]) / 2, (band[1] - band[0]) / 4
            else:
                mean, std = group[sensor].mean(), group[sensor].std()
            level[group.index] = (group[sensor] - mean) / (std if std else np.nan)
        slots[f"{sensor}_level"] = level
    return slots


def _none() -> pd.DataFrame:
    return pd.DataFrame(columns=["equipment_type", "regime", "setting", "centre", "scale"])


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if len(y) < 2 or np.ptp(x) == 0:
        return np.nan
    return float(np.polyfit(x, y, 1)[0])


def features(
    leveled: pd.DataFrame,
    catalog: Catalog,
    services: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The feature rows of every slot (see fct_equipment_features)."""
    sensors = catalog.sensor_names
    site_level = {}
    timed = leveled[leveled["site"].notna()].copy()
    wall_time = [catalog.equipment_types[t].clock.kind == "time" for t in timed["equipment_type"]]
    timed = timed[np.array(wall_time, dtype=bool)]
    timed["slot_width"] = timed["equipment_type"].map(
        lambda t: catalog.equipment_types[t].features.slot
    )
    for sensor in sensors:
        site_level[sensor] = timed.groupby(["site", "slot_width", "slot"])[
            f"{sensor}_level"
        ].median()
    out = []
    for equipment_id, rows in leveled.groupby("equipment_id"):
        rows = rows.sort_values("slot").reset_index(drop=True)
        etype = catalog.equipment_types[rows["equipment_type"].iloc[0]]
        grid = etype.features
        unit = grid.slot / 3600 if etype.clock.kind == "time" else grid.slot
        site = rows["site"].iloc[0]
        has_site = isinstance(site, str) and etype.clock.kind == "time"
        slots = rows["slot"].to_numpy()
        first = slots[0]
        baseline_end = first + grid.baseline
        in_baseline = (slots >= first) & (slots < baseline_end)
        complete = (slots >= baseline_end).any()
        relative = {}
        for sensor in sensors:
            own = rows[f"{sensor}_level"].to_numpy(dtype=float)
            if has_site:
                levels_here = site_level[sensor]
                keys = [(site, grid.slot, s) for s in slots]
                site_values = np.array([levels_here.get(k, np.nan) for k in keys], dtype=float)
                relative[sensor] = own - site_values
            else:
                relative[sensor] = np.full(len(rows), np.nan)
        last_service = _last_service(rows, services)
        unhealthy = skipped_periods(equipment_id, etype, failures)
        for i, s in enumerate(slots):
            ts = rows["ts"].iloc[i]
            result = {"equipment_id": equipment_id, "slot": int(s), "ts": ts}
            longest = grid.windows[-1]
            # The baseline: the last whole period of `baseline` slots (counted from slot 0)
            # that ends baseline_lag slots or more before this one and is not near a failure,
            # the first span while that period starts before the first slot. A type without a
            # lag keeps its first span.
            period = trailing_period(int(s), grid)
            while period is not None and period in unhealthy:
                period -= 1
            if period is None or period * grid.baseline < first:
                reference = in_baseline
                reference_end = baseline_end - 1
            else:
                reference = (slots >= period * grid.baseline) & (
                    slots < (period + 1) * grid.baseline
                )
                reference_end = (period + 1) * grid.baseline - 1
            for sensor in sensors:
                own = rows[f"{sensor}_level"].to_numpy(dtype=float)
                result[f"{sensor}_now"] = own[i]
                means = {}
                for k, w in enumerate(grid.windows, 1):
                    inside = (slots > s - w) & (slots <= s)
                    values = own[inside]
                    present = values[~np.isnan(values)]
                    n = len(present)
                    means[k] = present.mean() if n else np.nan
                    result[f"{sensor}_mean_w{k}"] = means[k]
                    result[f"{sensor}_std_w{k}"] = present.std(ddof=1) if n > 1 else np.nan
                    result[f"{sensor}_slope_w{k}"] = _slope(slots[inside] * unit, values)
                    result[f"{sensor}_outside_w{k}"] = (
                        (np.abs(present) > OUTSIDE_SIGMAS).mean() if n else np.nan
                    )
                base = own[reference]
                base = base[~np.isnan(base)]
                after = complete and s >= baseline_end
                enough = len(base) >= grid.baseline_min_slots
                b_mean = base.mean() if enough else np.nan
                b_std = base.std(ddof=1) if enough else np.nan
                result[f"{sensor}_dev_lag"] = (
                    (means[1] - b_mean) / b_std if after and b_std else np.nan
                )
                result[f"{sensor}_drift_lag"] = (
                    means[len(grid.windows)] - b_mean if after else np.nan
                )
                before = (slots > s - longest) & (slots < s)
                rel = relative[sensor][before]
                rel = rel[~np.isnan(rel)]
                site_base = relative[sensor][reference]
                site_base = site_base[~np.isnan(site_base)]
                result[f"{sensor}_site_drift_lag"] = (
                    rel.mean() - site_base.mean()
                    if after and len(rel) and len(site_base)
                    else np.nan
                )
            filled = ((slots > s - longest) & (slots <= s)).sum()
            result["missing_rate"] = max(0.0, 1 - filled / max(1, min(longest, s - first + 1)))
            since = [rows["ts"].iloc[0]]
            commissioned = rows["commissioned_at"].iloc[0]
            if pd.notna(commissioned) and commissioned <= ts:
                since.append(commissioned)
            if last_service is not None:
                done = last_service[last_service <= ts]
                if len(done):
                    since.append(done.max())
            result["since_maintenance"] = (ts - max(since)).total_seconds() / (
                etype.clock.unit_seconds
            )
            after = complete and s >= baseline_end
            result["baseline_age"] = (s - reference_end) * unit if after else np.nan
            out.append(result)
    return pd.DataFrame(out)


def trailing_period(slot: int, grid) -> int | None:
    """The baseline period (slots period x baseline .. (period + 1) x baseline - 1) a slot's
    trailing baseline is, or None for a type that keeps its first span."""
    if grid.baseline_lag is None:
        return None
    return (slot - grid.baseline_lag + 1) // grid.baseline - 1


def skipped_periods(equipment_id, etype, failures: pd.DataFrame | None) -> set[int]:
    """The baseline periods of a wall-time machine with a trailing baseline that a failure
    makes no healthy reference: those holding a slot from a horizon before the failure to its
    repair, if a slot after the failure's is the first compared with them."""
    grid = etype.features
    if failures is None or grid.baseline_lag is None or etype.clock.kind != "time":
        return set()
    periods: set[int] = set()
    mine = failures[failures["equipment_id"] == equipment_id]
    for failed_at, repaired_at in zip(mine["failed_at"], mine["repaired_at"], strict=True):
        failed = _epoch_seconds(pd.Series([failed_at])).iloc[0]
        back_to = int(np.floor((failed - etype.horizon_seconds) / grid.slot))
        end = repaired_at if pd.notna(repaired_at) else failed_at
        up_to = int(np.floor(_epoch_seconds(pd.Series([end])).iloc[0] / grid.slot))
        failed_slot = int(np.floor(failed / grid.slot))
        for period in range(back_to // grid.baseline, up_to // grid.baseline + 1):
            first_compared = (period + 1) * grid.baseline + grid.baseline_lag - 1
            if first_compared > failed_slot:
                periods.add(period)
    return periods


def _last_service(rows: pd.DataFrame, services: pd.DataFrame | None) -> pd.Series | None:
    if services is None or services.empty:
        return None
    mine = services[services["equipment_id"] == rows["equipment_id"].iloc[0]]
    return mine["serviced_at"] if len(mine) else None


def reference_features(
    readings: pd.DataFrame,
    equipment: pd.DataFrame,
    catalog: Catalog,
    regimes: pd.DataFrame | None = None,
    services: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The feature table a full build should write for these readings; `failures`
    (equipment_id, failed_at, repaired_at) with their repairs as services."""
    equipment = equipment.copy()
    if "commissioned_at" not in equipment.columns:
        equipment["commissioned_at"] = pd.NaT
    if failures is not None:
        repairs = failures.loc[failures["repaired_at"].notna(), ["equipment_id", "repaired_at"]]
        services = pd.concat(
            [services, repairs.rename(columns={"repaired_at": "serviced_at"})], ignore_index=True
        )
    slots = slot_values(readings, equipment, catalog)
    return features(levels(slots, catalog, regimes), catalog, services, failures)
