"""The simulated fleet: who the equipment are, when they degrade and fail, and what their sensors read.

Every reading is a pure function of (seed, equipment, minute): random draws come from generators
keyed by (seed, equipment index, day, sensor), never from a shared stream. So a backfill and a
live run of the same seed continue each other exactly, chunking never changes a value, and adding a
sensor to the catalog leaves the other sensors' readings as they were.

Values are modelled in "envelope units" z per sensor: value = mid + half_width * z, where the
envelope is the equipment type's healthy band (z in [-1, 1] is normal).

The fleet is meant to be as hard to read as a real one, so a model that does well on it has
learnt the sensors, not the simulator. `Realism` holds the knobs, all on by default
(`Realism.off()`, or EMPS_SIM_REALISM=easy, is the easy fleet of earlier versions, for
comparison):

- calendar_services: preventive services land by the calendar only, also in a developing fault
  (an earlier simulator skipped those, so "serviced recently" certified health);
- found_at_service: a service in a developing fault finds it with this probability times the
  fault's progress (0 at onset, 1 at failure); the failure is prevented: the service records
  `fault_found` (a prevented failure to the platform) and the machine is mended on the spot;
- failure_resolution_s: failure times are recorded only to the hour (the readings stop on the
  minute the machine fails);
- threshold_spread: the damage a machine fails at is random (lognormal), not one limit;
- intermittent_share, wobble: a share of faults come and go (hours on, hours quiet) until they
  settle in, and every fault's drift swings over days rather than only climbing;
- primary_share: a fault drifts its main sensor by this share of the easy fleet's drift and shows
  on other sensors too, each by less;
- machine_ambient: each machine has its own microclimate (exposure to the site's weather and a
  local day-to-day term), so the site's median does not remove its weather exactly;
- sensor_drift, sensor_replacements_per_year: sensor calibrations wander slowly, and a replaced
  sensor reads with a new offset from the day it is fitted;
- band_offset: the bands that generate the data sit off the catalog's published bands (the
  catalog is what a fleet's documents say, not what its machines do).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
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
_FOUND, _MICROCLIMATE, _CALIBRATION, _BANDS = 6, 7, 8, 9

CALIBRATION_SEGMENT_DAYS = 30  # a sensor's calibration wander is linear between these knots
CALIBRATION_BLOCK = 64  # segments drawn at once per sensor
REPLACEMENT_OFFSET = 0.15  # spread of a fitted sensor's offset, envelope units


REALISM_NAMES = ("real", "easy")


@dataclass(frozen=True)
class Realism:
    """The simulator's realism knobs (see the module docstring); all on by default."""

    calendar_services: bool = True
    found_at_service: float = 0.7  # chance at the point of failure; times progress before
    failure_resolution_s: int = 3600
    threshold_spread: float = 0.25  # sigma of log(damage at failure)
    intermittent_share: float = 0.3  # share of faults that come and go
    wobble: float = 0.2  # relative swing of a fault's drift over 2-6 days
    primary_share: float = 0.6  # of the easy fleet's drift on a fault's main sensor
    machine_ambient: float = 1.0  # 0: every machine feels exactly its site's weather
    sensor_drift: float = 0.1  # sd of the calibration wander, half-widths, monthly knots
    sensor_replacements_per_year: float = 0.5  # per sensor
    band_offset: float = 0.12  # sd of the bands' shift and log-stretch, half-widths

    @classmethod
    def named(cls, name: str) -> Realism:
        """The knobs a setting names (EMPS_SIM_REALISM): "real", every knob on, or "easy", the
        earlier simulator's fleet, to compare a model on both."""
        if name not in REALISM_NAMES:
            raise ValueError(f"simulator realism {name!r}: one of {', '.join(REALISM_NAMES)}")
        return cls.off() if name == "easy" else cls()

    @classmethod
    def off(cls) -> Realism:
        """The easy fleet of earlier versions: every knob off."""
        return cls(
            calendar_services=False,
            found_at_service=0.0,
            failure_resolution_s=1,
            threshold_spread=0.0,
            intermittent_share=0.0,
            wobble=0.0,
            primary_share=1.0,
            machine_ambient=0.0,
            sensor_drift=0.0,
            sensor_replacements_per_year=0.0,
            band_offset=0.0,
        )


def _key(name: str) -> int:
    """A stable integer for a name (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode())


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


@dataclass(frozen=True)
class Episode:
    """One degradation that ends in a failure, then a repair (the reset), or that a service
    finds first (a prevented failure: `found_s` set, the machine mended at the service)."""

    equipment_id: str
    mode: str
    sudden: bool
    degradation_start_s: int
    failure_s: int  # when the machine fails, or would have failed had nobody found the fault
    repaired_s: int
    amplitude: float
    tau_days: float
    found_s: int | None = None
    recorded_s: int = 0  # the failure time the records hold (to the hour), or the finding
    flicker_hours: float = 0.0  # an intermittent fault's period of coming and going (0: steady)
    wobble: float = 0.0  # how far the drift swings over days, relative to its trend
    wobble_days: float = 3.0
    phase: float = 0.0

    @property
    def prevented(self) -> bool:
        return self.found_s is not None

    @property
    def ended_s(self) -> int:
        """When the drift stops: at the failure, or at the service that found the fault."""
        return self.found_s if self.found_s is not None else self.failure_s

    @property
    def degradation_start(self) -> datetime:
        return datetime.fromtimestamp(self.degradation_start_s, UTC)

    @property
    def failure_at(self) -> datetime:
        return datetime.fromtimestamp(self.failure_s, UTC)

    @property
    def recorded_at(self) -> datetime:
        return datetime.fromtimestamp(self.recorded_s, UTC)

    @property
    def repaired_at(self) -> datetime:
        return datetime.fromtimestamp(self.repaired_s, UTC)

    def progress(self, t_s: np.ndarray | int) -> np.ndarray:
        """The fault's damage as a share of the damage it fails at: 0 at onset, 1 at failure,
        growing a little faster than linearly (0 outside the degradation)."""
        ttf_days = (self.failure_s - np.asarray(t_s)) / DAY_S
        onset_days = (self.failure_s - self.degradation_start_s) / DAY_S
        floor = np.exp(-onset_days / self.tau_days)
        g = (np.exp(-ttf_days / self.tau_days) - floor) / (1 - floor)
        active = (t_s >= self.degradation_start_s) & (t_s < self.ended_s)
        return np.where(active, np.clip(g, 0, 1), 0.0)


@dataclass(frozen=True)
class Service:
    """A periodic preventive service: no fault found, or (`found_fault`) a developing fault found
    and mended, a prevented failure."""

    equipment_id: str
    start_s: int
    end_s: int
    number: int = 0  # the service's place on the equipment's calendar
    found_fault: bool = False

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
    exposure: float = 1.0  # how much of the site's weather reaches the machine
    realism: Realism = field(default_factory=Realism)
    _episodes: list[Episode] = field(default_factory=list, repr=False)
    _next_failure_rng: np.random.Generator | None = field(default=None, repr=False)
    _cursor_s: int = EPOCH_S

    def episodes_until(self, until_s: int) -> list[Episode]:
        """Every failure episode starting before `until_s`, generated in a fixed draw order.

        The same draws happen in the same order however far we look, so a longer horizon only
        appends episodes and never changes earlier ones. The services that may find a fault
        follow the calendar alone, so they never depend on the episodes either.
        """
        if self._next_failure_rng is None:
            self._next_failure_rng = _rng(self.seed, self.index, _FAILURES)
        rng = self._next_failure_rng
        knobs = self.realism
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
            # Drawn whatever the knobs, so turning one off changes only what it does.
            threshold = np.exp(knobs.threshold_spread * rng.standard_normal())
            flickers = rng.random() < knobs.intermittent_share
            flicker_hours = rng.uniform(6.0, 36.0)
            wobble_days = rng.uniform(2.0, 6.0)
            phase = rng.uniform(0.0, 2 * np.pi)
            if sudden:
                # Little or no warning: a short, weak drift, or none at all.
                onset_days = warning_hours / 24.0
                amplitude *= 0.5
                tau_days = max(onset_days / 3.0, 1.0 / 24.0)
            # Degradation never starts before the previous repair plus two quiet days.
            gap_days = max(gap_days, onset_days + 2.0)
            failure_s = self._cursor_s + int(gap_days * DAY_S)
            onset_s = failure_s - int(onset_days * DAY_S)
            resolution = max(1, knobs.failure_resolution_s)
            episode = Episode(
                self.equipment_id,
                mode,
                bool(sudden),
                onset_s,
                failure_s,
                failure_s + int(repair_hours * 3600),
                float(amplitude * threshold),
                float(tau_days),
                recorded_s=failure_s // resolution * resolution,
                flicker_hours=float(flicker_hours) if flickers else 0.0,
                wobble=knobs.wobble,
                wobble_days=float(wobble_days),
                phase=float(phase),
            )
            found = self._service_finding(episode)
            if found is not None:
                episode = replace(episode, found_s=found, repaired_s=found, recorded_s=found)
            self._episodes.append(episode)
            # From when it would have been repaired, so a fault found early leaves the rest of
            # the machine's history as it was (a fleet with and without the knob differ only there).
            self._cursor_s = failure_s + int(repair_hours * 3600)
        return [e for e in self._episodes if e.degradation_start_s <= until_s]

    def _service_finding(self, episode: Episode) -> int | None:
        """When a calendar service finds this developing fault (its completion), if one does:
        each service in the degradation finds it with a chance that grows with the damage."""
        chance = self.realism.found_at_service
        if not (self.realism.calendar_services and chance > 0):
            return None
        for service in self.calendar_services(episode.degradation_start_s, episode.failure_s):
            if service.end_s >= episode.failure_s:
                break
            draw = _rng(self.seed, self.index, _FOUND, service.number).random()
            if draw < chance * float(episode.progress(service.end_s)):
                return service.end_s
        return None

    def calendar_services(self, start_s: int, end_s: int) -> list[Service]:
        """Preventive services due by the calendar that start in [start_s, end_s)."""
        period = PREVENTIVE_PERIOD_DAYS * DAY_S
        phase = _rng(self.seed, self.index, _SERVICES).uniform(0, period)
        first = max(0, int((start_s - EPOCH_S - phase) // period) - 1)
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
            if begin >= start_s:
                services.append(Service(self.equipment_id, begin, begin + (2 + k % 3) * 3600, k))
        return services

    def services_between(self, start_s: int, end_s: int) -> list[Service]:
        """Preventive services started in [start_s, end_s), marked when one found a fault.

        Without `calendar_services` the services that would meet a failure are skipped, as the
        easy fleet did (which told a model that a recent service means no failure is coming).
        """
        services = self.calendar_services(start_s, end_s)
        if not self.realism.calendar_services:
            episodes = self.episodes_until(end_s + 30 * DAY_S)
            return [
                s
                for s in services
                if not any(
                    e.degradation_start_s - 2 * DAY_S <= s.start_s <= e.repaired_s + DAY_S
                    for e in episodes
                )
            ]
        found = {e.found_s for e in self.episodes_until(end_s) if e.prevented}
        return [replace(s, found_fault=s.end_s in found) for s in services]


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


def _unsteadiness(ep: Episode, minute_s: np.ndarray, progress: np.ndarray) -> np.ndarray:
    """How much of its drift a fault shows at each minute: an intermittent one comes and goes
    (hours on, hours at a fifth) until it settles in near the end; every one swings over days,
    less as it runs away towards the failure."""
    since_h = (minute_s - ep.degradation_start_s) / 3600
    shown = np.ones_like(progress)
    if ep.flicker_hours:
        on = np.sin(2 * np.pi * since_h / ep.flicker_hours + ep.phase) > -0.2
        settled = progress**3
        shown = np.where(on, 1.0, 0.2 + 0.8 * settled)
    if ep.wobble:
        shown = shown * (
            1
            + ep.wobble
            * (1 - progress)
            * np.sin(2 * np.pi * since_h / 24 / ep.wobble_days - ep.phase)
        )
    return shown


@dataclass(frozen=True)
class CalibrationBlock:
    """A sensor's calibration over CALIBRATION_BLOCK segments: the wander at each segment's start,
    when a new sensor was fitted in it (inf: none), that sensor's offset, and the offset of the
    sensor in place at each segment's end."""

    wander: np.ndarray
    fitted: np.ndarray
    offset: np.ndarray
    in_place: np.ndarray


class Fleet:
    """A seeded fleet of `size` equipment whose sensors come from the catalog, as real as
    `realism` says (default: every knob on)."""

    def __init__(self, catalog: Catalog, size: int, seed: int = 42, realism: Realism | None = None):
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
        self.realism = realism or Realism()
        self._calibration_blocks: dict[tuple[int, str, int], CalibrationBlock] = {}
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
            # Sheltered machines feel less of the site's weather, exposed ones more.
            exposure = _rng(self.seed, i, _PARAMS, _key("exposure")).uniform(-0.45, 0.3)
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
                    exposure=float(1 + self.realism.machine_ambient * exposure),
                    realism=self.realism,
                )
            )
        return fleet

    # -- envelopes ------------------------------------------------------------------------------
    @cached_property
    def _mid_half(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_equipment, n_sensors) midpoints and half-widths of the bands that generate the
        data: the catalog's envelopes, moved and stretched per type and sensor by `band_offset`."""
        mid = np.empty((len(self), len(self.sensors)))
        half = np.empty_like(mid)
        shift = self.realism.band_offset
        for row, eq in enumerate(self.equipment):
            for col, sensor in enumerate(self.sensors):
                band = self.catalog.envelope(eq.equipment_type, sensor)
                if band is None:
                    raise ValueError(
                        f"the simulator draws {sensor} on {eq.equipment_type} from its healthy "
                        "band: declare one in the catalog"
                    )
                low, high = band
                move, stretch = _rng(
                    self.seed, _BANDS, _key(eq.equipment_type), _key(sensor)
                ).standard_normal(2)
                half[row, col] = (high - low) / 2 * np.exp(shift * stretch)
                mid[row, col] = (low + high) / 2 + (high - low) / 2 * shift * move
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

    def _weather(self, eq: Equipment, day: int) -> tuple[np.ndarray, np.ndarray]:
        """Day-to-day weather at a machine (temperature and humidity), smooth across midnight:
        its site's, as much as reaches it, plus its own microclimate."""
        here = eq.exposure * _rng(self.seed, _WEATHER, eq.site_index, day).normal(0, 0.5, 2)
        nxt = eq.exposure * _rng(self.seed, _WEATHER, eq.site_index, day + 1).normal(0, 0.5, 2)
        local = self.realism.machine_ambient * 0.35
        if local:
            here += local * _rng(self.seed, _MICROCLIMATE, eq.index, day).standard_normal(2)
            nxt += local * _rng(self.seed, _MICROCLIMATE, eq.index, day + 1).standard_normal(2)
        frac = np.arange(MINUTES) / MINUTES
        return here[0] + (nxt[0] - here[0]) * frac, here[1] + (nxt[1] - here[1]) * frac

    def _calibration_block(self, i: int, sensor: str, block: int) -> CalibrationBlock:
        """Calibration segments [64 block, 64 block + 64) of a machine's sensor, one draw each."""
        key = (i, sensor, block)
        if key not in self._calibration_blocks:
            n = CALIBRATION_BLOCK
            rng = _rng(self.seed, i, _CALIBRATION, _key(sensor), block)
            wander, replaced, when, offset = (
                rng.standard_normal(n),
                rng.random(n),
                rng.random(n),
                rng.standard_normal(n),
            )
            segment_s = CALIBRATION_SEGMENT_DAYS * DAY_S
            chance = self.realism.sensor_replacements_per_year * CALIBRATION_SEGMENT_DAYS / 365
            k = block * n + np.arange(n)
            fitted = np.where(replaced < chance, EPOCH_S + ((k + when) * segment_s), np.inf)
            offset = REPLACEMENT_OFFSET * offset
            # The offset of the sensor in place at each segment's end: the last one fitted.
            carried = self._calibration_block(i, sensor, block - 1).in_place[-1] if block else 0.0
            in_place = np.empty(n)
            for j in range(n):
                carried = offset[j] if np.isfinite(fitted[j]) else carried
                in_place[j] = carried
            self._calibration_blocks[key] = CalibrationBlock(
                self.realism.sensor_drift * wander, fitted, offset, in_place
            )
        return self._calibration_blocks[key]

    def _calibration(self, idx: np.ndarray, minute_s: np.ndarray) -> np.ndarray | float:
        """What each machine's sensors add to the truth at each minute of one day, (n, n_sensors,
        m): a slow wander, linear between monthly knots, and the offset of the sensor fitted
        last (from the minute it was fitted)."""
        if not (self.realism.sensor_drift or self.realism.sensor_replacements_per_year):
            return 0.0
        segment_s = CALIBRATION_SEGMENT_DAYS * DAY_S
        k = (int(minute_s[0]) - EPOCH_S) // segment_s
        block, j = divmod(k, CALIBRATION_BLOCK)
        # Per machine and sensor: wander now and at the next knot, the offset in place before
        # this segment, and a sensor fitted in it (when, offset).
        knots = np.empty((len(idx), len(self.sensors), 5))
        for row, i in enumerate(idx):
            for col, sensor in enumerate(self.sensors):
                this = self._calibration_block(int(i), sensor, block)
                if j + 1 < CALIBRATION_BLOCK:
                    following = this.wander[j + 1]
                else:
                    following = self._calibration_block(int(i), sensor, block + 1).wander[0]
                if j:
                    before = this.in_place[j - 1]
                elif block:
                    before = self._calibration_block(int(i), sensor, block - 1).in_place[-1]
                else:
                    before = 0.0
                knots[row, col] = (
                    this.wander[j],
                    following,
                    before,
                    this.fitted[j],
                    this.offset[j],
                )
        frac = (minute_s - EPOCH_S - k * segment_s) / segment_s
        start, following, before, fitted, offset = (knots[..., n, None] for n in range(5))
        wander = start + (following - start) * frac
        return wander + np.where(minute_s >= fitted, offset, before)

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
            weather_t[row], weather_h[row] = self._weather(eq, day)

        # Heat builds and fades with a ~40 minute time constant: temperature lags the load.
        alpha = 1 - np.exp(-1 / 40)
        thermal = first_order_lag(load, alpha, prev_load)
        daily = np.sin(2 * np.pi * (np.arange(MINUTES) / MINUTES - 9 / 24))  # warmest at 15:00
        # From here on only the picked minutes are computed.
        daily, minute_s = daily[sel], minute_s[sel]
        running, load, thermal = running[:, sel], load[:, sel], thermal[:, sel]
        weather_t, weather_h, present = weather_t[:, sel], weather_h[:, sel], present[:, sel]
        exposure = np.array([self.equipment[i].exposure for i in idx])[:, None]
        ambient = 0.35 * exposure * daily + 0.3 * weather_t

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
                z[:, col] = off - 0.5 * exposure * daily + 0.4 * weather_h + 0.12 * eps
            elif sensor == "voltage":
                z[:, col] = off - 0.25 * load + 0.08 * eps
            else:
                # A sensor the simulator has no physics for: load- and ambient-driven with noise,
                # coefficients fixed per sensor name so they do not depend on the seed.
                c_load, c_amb = _rng(_key(sensor)).uniform(-0.8, 0.8, 2)
                z[:, col] = off + c_load * (load - 0.5) + c_amb * ambient + 0.12 * eps

        self._degrade(z, noise, idx, minute_s, running, thermal, present)
        z += self._calibration(idx, minute_s)

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
        """Add each failure episode's drift; equipment is down (no rows) from failure to repair.

        A fault drifts its main sensor (by `primary_share` of the easy fleet's drift) and, by
        less, others: (sensor, weight) per mode below, each scaled by 1 - primary_share.
        """
        col = {s: c for c, s in enumerate(self.sensors)}
        day_start = EPOCH_S + (int(minute_s[0]) - EPOCH_S) // DAY_S * DAY_S
        day_end = day_start + DAY_S
        main = self.realism.primary_share
        spread = 1 - main
        for row, i in enumerate(idx):
            eq = self.equipment[i]
            for ep in eq.episodes_until(day_end + DAY_S):
                if ep.repaired_s <= day_start or ep.degradation_start_s >= day_end:
                    continue
                if not ep.prevented:
                    present[row] &= ~((minute_s >= ep.failure_s) & (minute_s < ep.repaired_s))
                progress = ep.progress(minute_s)
                g = progress * ep.amplitude * _unsteadiness(ep, minute_s, progress)
                on = running[row]
                heat = 0.3 + 0.7 * thermal[row]

                def add(sensor: str, drift: np.ndarray, row: int = row) -> None:
                    if sensor in col:
                        z[row, col[sensor]] += drift

                if ep.mode == "bearing_wear":
                    add(
                        "vibration",
                        main * g * (2.8 * (0.4 + 0.6 * on) + 0.25 * noise[row, col["vibration"]]),
                    )
                    late = np.clip((progress - 0.3) / 0.7, 0, 1) ** 1.5
                    add("temperature", 1.5 * ep.amplitude * late + spread * 1.8 * g * heat)
                    add("voltage", -spread * 0.8 * g * on)
                elif ep.mode == "electrical":
                    # The supply grows unstable: variance rises first, then the level sags.
                    add("voltage", main * g * (-0.4 + 1.2 * noise[row, col["voltage"]]))
                    add("temperature", spread * 1.5 * g * heat)
                    add("vibration", spread * 0.8 * g * on)
                elif ep.mode == "seal_leak":
                    add("pressure", -main * 2.4 * g)
                    add("vibration", 0.3 * g + spread * 1.2 * g * on)
                    add("temperature", spread * 1.0 * g * heat)
                elif ep.mode == "cooling_fault":
                    add("temperature", main * 2.2 * g * heat)
                    add("pressure", -spread * 1.2 * g * on)
                    add("vibration", spread * 0.8 * g * on)
                else:
                    z[row, 0] += main * 2.5 * g
                    if z.shape[1] > 1:
                        z[row, 1] += spread * 2.0 * g

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
