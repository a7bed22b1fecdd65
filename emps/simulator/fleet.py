"""The simulated fleet: who the equipment are, when they degrade and fail, and what their sensors read.

Every reading is a pure function of (seed, equipment, minute): random draws come from generators
keyed by (seed, equipment index, day, sensor), never from a shared stream. So a backfill and a
live run of the same seed continue each other exactly, chunking never changes a value, and adding a
sensor to the catalog leaves the other sensors' readings as they were.

Values are modelled in "envelope units" z per sensor: value = mid + half_width * z, where the
envelope is the equipment type's healthy band from the catalog (z in [-1, 1] is normal).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np

from emps.catalog import Catalog

# Failure histories start here, whatever window is simulated, so any window of a seed agrees.
SIM_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
EPOCH_S = int(SIM_EPOCH.timestamp())
DAY_S = 86_400
MINUTES = 1_440  # the base grid: readings exist for every minute; cadences sample it

SITES = (
    "north-ridge",
    "harbour-depot",
    "desert-outpost",
    "mountain-station",
    "coastal-base",
    "forward-camp",
    "air-wing",
    "logistics-hub",
    "river-crossing",
    "training-area",
    "signal-hill",
    "supply-point",
)
UNITS = (
    "1st Signal Regiment",
    "2nd Engineer Battalion",
    "3rd Logistics Battalion",
    "4th Air Defence Battery",
    "5th Armoured Squadron",
)

# Share of each equipment type's hours spent running; mean days between failures.
DUTY = {"radar": 0.95, "generator": 0.85, "compressor": 0.7, "pump": 0.6, "vehicle_engine": 0.35}
MEAN_DAYS_BETWEEN_FAILURES = {
    "vehicle_engine": 180.0,
    "pump": 220.0,
    "compressor": 220.0,
    "generator": 280.0,
    "radar": 320.0,
}
DEFAULT_DUTY = 0.7
DEFAULT_MTBF_DAYS = 240.0

# Degradation modes, the sensor that shows each first, and how often each occurs.
MODES = {
    "bearing_wear": ("vibration", 0.35),
    "electrical": ("voltage", 0.2),
    "seal_leak": ("pressure", 0.2),
    "cooling_fault": ("temperature", 0.25),
}
FALLBACK_MODE = "wear"  # a catalog without the seed sensors: drift on its first sensor
SUDDEN_SHARE = 0.06
PREVENTIVE_PERIOD_DAYS = 90.0

# Data-quality defects devices really have.
OUTAGE_PER_DAY = 0.04  # probability of a communication gap of 10-180 minutes in a day
MISSING_ROW = 0.002
NULL_VALUE = 0.003
OUTLIER = 0.0002

# Stream ids: separate random streams per purpose (SeedSequence entropy words).
_PARAMS, _FAILURES, _SERVICES, _DAY, _WEATHER = 1, 2, 3, 4, 5


def _key(name: str) -> int:
    """A stable integer for a name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


@dataclass(frozen=True)
class Episode:
    """One degradation that ends in a failure, then a repair (the reset)."""

    equipment_id: str
    mode: str
    sudden: bool
    degradation_start_s: int
    failure_s: int
    repaired_s: int
    amplitude: float
    tau_days: float

    @property
    def degradation_start(self) -> datetime:
        return datetime.fromtimestamp(self.degradation_start_s, UTC)

    @property
    def failure_at(self) -> datetime:
        return datetime.fromtimestamp(self.failure_s, UTC)

    @property
    def repaired_at(self) -> datetime:
        return datetime.fromtimestamp(self.repaired_s, UTC)


@dataclass(frozen=True)
class Service:
    """A periodic preventive service (completed, no fault found)."""

    equipment_id: str
    start_s: int
    end_s: int

    @property
    def scheduled_date(self) -> datetime:
        return datetime.fromtimestamp(self.start_s, UTC)

    @property
    def completed_date(self) -> datetime:
        return datetime.fromtimestamp(self.end_s, UTC)


@dataclass
class Equipment:
    index: int
    equipment_id: str
    equipment_type: str
    site: str
    site_index: int
    unit: str
    commissioned_at: datetime
    duty: float
    mtbf_days: float
    offsets: dict[str, float]
    seed: int
    modes: tuple[str, ...]
    _episodes: list[Episode] = field(default_factory=list, repr=False)
    _next_failure_rng: np.random.Generator | None = field(default=None, repr=False)
    _cursor_s: int = EPOCH_S

    def episodes_until(self, until_s: int) -> list[Episode]:
        """Every failure episode starting before `until_s`, generated in a fixed draw order.

        The same draws happen in the same order however far we look, so a longer horizon only
        appends episodes and never changes earlier ones.
        """
        if self._next_failure_rng is None:
            self._next_failure_rng = _rng(self.seed, self.index, _FAILURES)
        rng = self._next_failure_rng
        while self._cursor_s <= until_s:
            sudden = rng.random() < SUDDEN_SHARE
            weights = np.array([MODES[m][1] if m in MODES else 1.0 for m in self.modes])
            mode = self.modes[int(rng.choice(len(self.modes), p=weights / weights.sum()))]
            # Damage grows a little faster than linearly from onset until it reaches the limit.
            onset_days = rng.uniform(19.0, 23.0)
            tau_days = rng.uniform(12.0, 20.0)
            amplitude = rng.uniform(0.9, 1.1)
            warning_hours = rng.uniform(0.0, 24.0)
            gap_days = rng.gamma(2.0, self.mtbf_days / 2.0)
            repair_hours = rng.uniform(6.0, 48.0)
            if sudden:
                # Little or no warning: a short, weak drift, or none at all.
                onset_days = warning_hours / 24.0
                amplitude *= 0.5
                tau_days = max(onset_days / 3.0, 1.0 / 24.0)
            # Degradation never starts before the previous repair plus two quiet days.
            gap_days = max(gap_days, onset_days + 2.0)
            failure_s = self._cursor_s + int(gap_days * DAY_S)
            onset_s = failure_s - int(onset_days * DAY_S)
            repaired_s = failure_s + int(repair_hours * 3600)
            self._episodes.append(
                Episode(
                    self.equipment_id,
                    mode,
                    bool(sudden),
                    onset_s,
                    failure_s,
                    repaired_s,
                    float(amplitude),
                    float(tau_days),
                )
            )
            self._cursor_s = repaired_s
        return [e for e in self._episodes if e.degradation_start_s <= until_s]

    def services_between(self, start_s: int, end_s: int) -> list[Service]:
        """Preventive services started in [start_s, end_s), skipping ones that meet a failure."""
        period = PREVENTIVE_PERIOD_DAYS * DAY_S
        phase = _rng(self.seed, self.index, _SERVICES).uniform(0, period)
        first = max(0, int((start_s - EPOCH_S - phase) // period) - 1)
        episodes = self.episodes_until(end_s + 30 * DAY_S)
        services = []
        k = first
        while True:
            jitter = _rng(self.seed, self.index, _SERVICES, k).uniform(-7, 7) * DAY_S
            begin = int(EPOCH_S + phase + k * period + jitter)
            # Services start in working hours and take 2-4 hours.
            begin = begin - begin % DAY_S + 8 * 3600 + (k % 3) * 3600
            k += 1
            if begin >= end_s:
                break
            if begin < start_s:
                continue
            end = begin + (2 + k % 3) * 3600
            clash = any(
                e.degradation_start_s - 2 * DAY_S <= begin <= e.repaired_s + DAY_S for e in episodes
            )
            if not clash:
                services.append(Service(self.equipment_id, begin, end))
        return services


@dataclass(frozen=True)
class DayBlock:
    """All equipment's readings for one UTC day on the minute grid."""

    day: int  # days since SIM_EPOCH
    minutes: np.ndarray  # (m,) the minutes of the day sampled
    present: np.ndarray  # (n_equipment, m) bool: a row exists (device up and reporting)
    values: np.ndarray  # (n_equipment, n_sensors, m) float64, NaN = null sensor

    @property
    def start_s(self) -> int:
        return EPOCH_S + self.day * DAY_S


def first_order_lag(x: np.ndarray, alpha: float, before: np.ndarray) -> np.ndarray:
    """y[:, t] = alpha * x[:, t] + (1 - alpha) * y[:, t - 1], with y[:, -1] = `before`.

    What scipy's `lfilter([alpha], [1, alpha - 1], x, axis=1)` computes; scipy.signal's imports
    would cost the live simulator ~80 MB for this one filter.
    """
    y = np.empty_like(x, dtype=float)
    previous = np.asarray(before, dtype=float)
    for t in range(x.shape[1]):
        previous = alpha * x[:, t] + (1 - alpha) * previous
        y[:, t] = previous
    return y


class Fleet:
    """A seeded fleet of `size` equipment whose sensors come from the catalog."""

    def __init__(self, catalog: Catalog, size: int, seed: int = 42):
        if size < 1:
            raise ValueError("a fleet needs at least one equipment")
        unfit = [
            name
            for name, etype in catalog.equipment_types.items()
            if etype.clock.kind != "time"
            or catalog.type_settings(name)
            or any(etype.channels.get(s) is None for s in catalog.sensor_names)
        ]
        if unfit:
            raise ValueError(
                f"the simulator draws readings inside each type's healthy bands on wall time: "
                f"type(s) {', '.join(unfit)} lack a band for a catalog sensor, have settings or "
                "count cycles; bring such a fleet's history as a fleet pack instead"
            )
        self.catalog = catalog
        self.seed = int(seed)
        self.sensors = catalog.sensor_names
        self.equipment = self._build(size)
        self.by_id = {e.equipment_id: e for e in self.equipment}

    def __len__(self) -> int:
        return len(self.equipment)

    def _build(self, size: int) -> list[Equipment]:
        types = self.catalog.type_names
        modes = tuple(m for m, (sensor, _) in MODES.items() if sensor in self.catalog.sensors)
        modes = modes or (FALLBACK_MODE,)
        counters = dict.fromkeys(types, 0)
        fleet = []
        for i in range(size):
            rng = _rng(self.seed, i, _PARAMS)
            etype = types[int(rng.integers(len(types)))]
            site_index = int(rng.integers(len(SITES)))
            unit = UNITS[int(rng.integers(len(UNITS)))]
            commissioned = SIM_EPOCH - timedelta(days=float(rng.uniform(30, 5 * 365)))
            duty = float(np.clip(DUTY.get(etype, DEFAULT_DUTY) + rng.normal(0, 0.05), 0.1, 1.0))
            counters[etype] += 1
            prefix = self.catalog.equipment_types[etype].id_prefix or etype[:3].upper()
            offsets = {
                s: float(_rng(self.seed, i, _PARAMS, _key(s)).normal(0, 0.25)) for s in self.sensors
            }
            fleet.append(
                Equipment(
                    index=i,
                    equipment_id=f"{prefix}-{counters[etype]:04d}",
                    equipment_type=etype,
                    site=SITES[site_index],
                    site_index=site_index,
                    unit=unit,
                    commissioned_at=commissioned.replace(microsecond=0),
                    duty=duty,
                    mtbf_days=MEAN_DAYS_BETWEEN_FAILURES.get(etype, DEFAULT_MTBF_DAYS),
                    offsets=offsets,
                    seed=self.seed,
                    modes=modes,
                )
            )
        return fleet

    # -- envelopes ------------------------------------------------------------------------------
    @cached_property
    def _mid_half(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_equipment, n_sensors) envelope midpoints and half-widths."""
        mid = np.empty((len(self), len(self.sensors)))
        half = np.empty_like(mid)
        for row, eq in enumerate(self.equipment):
            for col, sensor in enumerate(self.sensors):
                low, high = self.catalog.envelope(eq.equipment_type, sensor)
                mid[row, col] = (low + high) / 2
                half[row, col] = (high - low) / 2
        return mid, half

    @cached_property
    def _valid(self) -> tuple[np.ndarray, np.ndarray]:
        low = np.array([self.catalog.sensors[s].valid_range[0] for s in self.sensors])
        high = np.array([self.catalog.sensors[s].valid_range[1] for s in self.sensors])
        return low, high

    # -- the day-level model ---------------------------------------------------------------------
    def _schedule(
        self, eq: Equipment, day: int
    ) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
        """Hourly on/off and load for a day, and the day's generator for row defects."""
        rng = _rng(self.seed, eq.index, day, _DAY)
        hours = np.arange(24)
        if eq.duty < 0.5:
            # Low-duty equipment (vehicles) runs mostly in daytime.
            p_on = np.where((hours >= 6) & (hours < 18), min(1.0, eq.duty * 1.8), eq.duty * 0.2)
        else:
            p_on = np.full(24, eq.duty)
        on = rng.random(24) < p_on
        load = np.where(on, rng.uniform(0.45, 1.0, 24), 0.0)
        return on, load, rng

    def _weather(self, site_index: int, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Day-to-day weather at a site (temperature and humidity), smooth across midnight."""
        here = _rng(self.seed, _WEATHER, site_index, day).normal(0, 0.5, 2)
        nxt = _rng(self.seed, _WEATHER, site_index, day + 1).normal(0, 0.5, 2)
        frac = np.arange(MINUTES) / MINUTES
        return here[0] + (nxt[0] - here[0]) * frac, here[1] + (nxt[1] - here[1]) * frac

    def simulate_day(
        self, day: int, indices: np.ndarray | None = None, minutes: np.ndarray | None = None
    ) -> DayBlock:
        """Readings of the equipment at `indices` (default: all) for day `day` since SIM_EPOCH.

        `minutes` picks the minutes of the day to return (default: all 1440). Random draws are
        always made for the whole day, so a minute's value does not depend on which are picked.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        sel = np.arange(MINUTES) if minutes is None else np.asarray(minutes)
        n, n_s, m = len(idx), len(self.sensors), len(sel)
        day_start = EPOCH_S + day * DAY_S
        minute_s = day_start + 60 * np.arange(MINUTES)

        running = np.empty((n, MINUTES))
        load = np.empty((n, MINUTES))
        prev_load = np.empty(n)
        present = np.ones((n, MINUTES), dtype=bool)
        weather_t = np.empty((n, MINUTES))
        weather_h = np.empty((n, MINUTES))
        for row, i in enumerate(idx):
            eq = self.equipment[i]
            on, hourly, rng = self._schedule(eq, day)
            running[row] = np.repeat(on, 60)
            load[row] = np.repeat(hourly, 60)
            prev_load[row] = self._schedule(eq, day - 1)[1][-1]
            if rng.random() < OUTAGE_PER_DAY:
                begin = int(rng.integers(0, MINUTES))
                present[row, begin : begin + int(rng.integers(10, 180))] = False
            present[row] &= rng.random(MINUTES) >= MISSING_ROW
            weather_t[row], weather_h[row] = self._weather(eq.site_index, day)

        # Heat builds and fades with a ~40 minute time constant: temperature lags the load.
        alpha = 1 - np.exp(-1 / 40)
        thermal = first_order_lag(load, alpha, prev_load)
        daily = np.sin(2 * np.pi * (np.arange(MINUTES) / MINUTES - 9 / 24))  # warmest at 15:00
        # From here on only the picked minutes are computed.
        daily, minute_s = daily[sel], minute_s[sel]
        running, load, thermal = running[:, sel], load[:, sel], thermal[:, sel]
        weather_t, weather_h, present = weather_t[:, sel], weather_h[:, sel], present[:, sel]
        ambient = 0.35 * daily + 0.3 * weather_t

        mid, half = self._mid_half
        z = np.empty((n, n_s, m))
        noise = np.empty((n, n_s, m))
        defects = np.empty((n, n_s, m, 2))
        for row, i in enumerate(idx):
            for col, sensor in enumerate(self.sensors):
                rng = _rng(self.seed, i, day, _key(sensor))
                noise[row, col] = rng.standard_normal(MINUTES)[sel]
                defects[row, col] = rng.random((MINUTES, 2))[sel]
        offsets = np.array([[self.equipment[i].offsets[s] for s in self.sensors] for i in idx])

        for col, sensor in enumerate(self.sensors):
            off = offsets[:, col : col + 1]
            eps = noise[:, col]
            if sensor == "temperature":
                z[:, col] = off + 1.3 * (thermal - 0.55) + ambient + 0.10 * eps
            elif sensor == "vibration":
                z[:, col] = off + running * (0.6 * load - 0.1) - (1 - running) * 0.9 + 0.18 * eps
            elif sensor == "pressure":
                z[:, col] = off + running * 0.8 * (load - 0.7) - (1 - running) * 0.6 + 0.08 * eps
            elif sensor == "humidity":
                z[:, col] = off - 0.5 * daily + 0.4 * weather_h + 0.12 * eps
            elif sensor == "voltage":
                z[:, col] = off - 0.25 * load + 0.08 * eps
            else:
                # A sensor the simulator has no physics for: load- and ambient-driven with noise,
                # coefficients fixed per sensor name so they do not depend on the seed.
                c_load, c_amb = _rng(_key(sensor)).uniform(-0.8, 0.8, 2)
                z[:, col] = off + c_load * (load - 0.5) + c_amb * ambient + 0.12 * eps

        self._degrade(z, noise, idx, minute_s, running, thermal, present)

        outlier = defects[..., 0] < OUTLIER
        # A spike of 3-6 envelope units, up or down.
        spike = np.sign(noise) * (3 + 3 * defects[..., 0] / OUTLIER)
        z = np.where(outlier, z + spike, z)
        values = mid[idx][:, :, None] + half[idx][:, :, None] * z
        low, high = self._valid
        values = np.clip(values, low[None, :, None], high[None, :, None]).round(3)
        values[defects[..., 1] < NULL_VALUE] = np.nan
        return DayBlock(day, sel, present, values)

    def _degrade(
        self,
        z: np.ndarray,
        noise: np.ndarray,
        idx: np.ndarray,
        minute_s: np.ndarray,
        running: np.ndarray,
        thermal: np.ndarray,
        present: np.ndarray,
    ) -> None:
        """Add each failure episode's drift; equipment is down (no rows) from failure to repair."""
        col = {s: c for c, s in enumerate(self.sensors)}
        day_start = EPOCH_S + (int(minute_s[0]) - EPOCH_S) // DAY_S * DAY_S
        day_end = day_start + DAY_S
        for row, i in enumerate(idx):
            eq = self.equipment[i]
            for ep in eq.episodes_until(day_end + DAY_S):
                if ep.repaired_s <= day_start or ep.degradation_start_s >= day_end:
                    continue
                present[row] &= ~((minute_s >= ep.failure_s) & (minute_s < ep.repaired_s))
                ttf_days = (ep.failure_s - minute_s) / DAY_S
                onset_days = (ep.failure_s - ep.degradation_start_s) / DAY_S
                active = (minute_s >= ep.degradation_start_s) & (minute_s < ep.failure_s)
                # Exponential approach to failure, zero at onset, one at failure.
                floor = np.exp(-onset_days / ep.tau_days)
                g = (np.exp(-ttf_days / ep.tau_days) - floor) / (1 - floor)
                g = np.where(active, np.clip(g, 0, 1), 0.0) * ep.amplitude
                on = running[row]
                if ep.mode == "bearing_wear":
                    z[row, col["vibration"]] += g * (
                        2.8 * (0.4 + 0.6 * on) + 0.25 * noise[row, col["vibration"]]
                    )
                    if "temperature" in col:
                        late = np.clip((g / ep.amplitude - 0.3) / 0.7, 0, 1) ** 1.5
                        z[row, col["temperature"]] += 1.5 * ep.amplitude * late
                elif ep.mode == "electrical":
                    # The supply grows unstable: variance rises first, then the level sags.
                    z[row, col["voltage"]] += g * (-0.4 + 1.2 * noise[row, col["voltage"]])
                elif ep.mode == "seal_leak":
                    z[row, col["pressure"]] -= 2.4 * g
                    if "vibration" in col:
                        z[row, col["vibration"]] += 0.3 * g
                elif ep.mode == "cooling_fault":
                    z[row, col["temperature"]] += 2.2 * g * (0.3 + 0.7 * thermal[row])
                else:
                    z[row, 0] += 2.5 * g

    # -- sampling the minute grid --------------------------------------------------------------
    def chunks(
        self,
        start: datetime,
        end: datetime,
        interval_s: int,
        batch: int = 250,
    ):
        """Yield `ReadingChunk`s covering [start, end) at `interval_s`, one day and batch at a time."""
        if interval_s % 60:
            raise ValueError(f"interval {interval_s} s: must be a whole number of minutes")
        step = interval_s // 60
        start_s, end_s = int(start.timestamp()), int(end.timestamp())
        first_day = (start_s - EPOCH_S) // DAY_S
        last_day = (end_s - 1 - EPOCH_S) // DAY_S
        if first_day < 0:
            raise ValueError(f"the simulator's history starts at {SIM_EPOCH:%Y-%m-%d}")
        for day in range(first_day, last_day + 1):
            day_start = EPOCH_S + day * DAY_S
            minutes = np.arange(MINUTES)
            ts = day_start + 60 * minutes
            keep = np.flatnonzero(((ts // 60) % step == 0) & (ts >= start_s) & (ts < end_s))
            if not len(keep):
                continue
            for lo in range(0, len(self), batch):
                indices = np.arange(lo, min(lo + batch, len(self)))
                block = self.simulate_day(day, indices, keep)
                yield ReadingChunk.from_block(block, indices)


@dataclass(frozen=True)
class ReadingChunk:
    """Rows ready to write: equipment index, timestamp (unix seconds) and one value per sensor."""

    equipment_index: np.ndarray  # (rows,) int
    ts_s: np.ndarray  # (rows,) int64
    values: np.ndarray  # (rows, n_sensors) float64, NaN = null

    def __len__(self) -> int:
        return len(self.ts_s)

    @classmethod
    def from_block(cls, block: DayBlock, indices: np.ndarray) -> ReadingChunk:
        rows, cols = np.nonzero(block.present)
        return cls(
            equipment_index=indices[rows],
            ts_s=(block.start_s + 60 * block.minutes[cols]).astype(np.int64),
            values=block.values[rows, :, cols],
        )
