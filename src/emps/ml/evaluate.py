"""Honest evaluation: figures a commander can act on, measured on equipment no model learnt from.

Every equipment has a stable position in [0, 1) (a hash of its id), so slices stay the same
across retrains. Of the held-out fraction f (EMPS_ML_TEST_EQUIPMENT_FRACTION), the first half is
the *gate slice* (the promotion gate compares challenger and champion there) and the second half
the *report slice* (the figures `emps model evaluate` and MLflow report; no gate ever looks at
it, so choosing a model never flatters its reported figures). Training uses the rest.

Two kinds of history, chosen from the data (`history_kind`):

- continuous (a fleet in service, failures repaired): held-out equipment AND a later period,
  separated by a label-horizon gap, since a training row's label looks H ahead:

      | train (train equipment) | gap H | test period (held-out equipment) |

  Event figures look back 3 H before a failure, so the held-out equipment's rows from 3 H before
  the test period come along as look-back context (never counted themselves).
- run-to-failure (each unit's history ends in its failure): whole units are held out, with no
  cut in time: a calendar cut would drop every unit that ended before it. Training also
  cross-validates over all units, grouped by unit (`kfold_splits`).

The figures (`event_figures`, `remaining_life_figures`) are plain functions of held-out rows,
their predictions and the failure events, reused by `emps model evaluate`, MLflow, the promotion
gate and the benches. Time is measured in each equipment type's life unit: days for wall-time
clocks, the counter's unit (cycles, operating hours) otherwise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import beta, chi2
from sklearn import metrics as skm

from emps.catalog import Catalog, load_catalog
from emps.ml.assess import SINCE_SERVICE, settling_rows
from emps.ml.dataset import DAYS_LABEL, LABEL, LABEL_FINAL, horizon, horizon_days
from emps.settings import Settings, get_settings

# Event figures look this many failure horizons back from each failure for its first warning,
# and forward from each alert for the failure it warned of.
LOOKBACK_HORIZONS = 3
DAYS_PER_MONTH = 365.25 / 12
# Resamples of the held-out equipment behind the 95 % intervals (`<figure>_ci95_low|high`).
INTERVAL_RESAMPLES = 400
INTERVAL_MIN_EQUIPMENT = 3
CONTINUOUS = "continuous"
# An alert episode's outcome: a failure followed within the look-back, none did though the
# history goes on long enough to know, or the history ends too soon to tell.
TRUE_ALERT, FALSE_ALERT, UNDETERMINED_ALERT = "true", "false", "undetermined"
RUN_TO_FAILURE = "run_to_failure"
SPLIT_NAMES = {
    CONTINUOUS: "held-out equipment and a later period",
    RUN_TO_FAILURE: "held-out whole units, grouped k-fold",
}

# What `emps model evaluate --json` prints and bench/model_quality.py builds on: the headline
# figures, event-level at the alerting band, then remaining life next to its naive baseline.
HEADLINE_KEYS = (
    "failures_warned_share",
    "failures_warned_share_ci95_low",
    "failures_warned_share_ci95_high",
    "failures_evaluated",
    "median_lead",
    "false_alert_episodes_per_100_equipment_months",
    "false_alert_episodes_per_100_equipment_months_ci95_low",
    "false_alert_episodes_per_100_equipment_months_ci95_high",
    "alerts_per_week",
    "rul_mae_displayed",
    "rul_mae_displayed_ci95_low",
    "rul_mae_displayed_ci95_high",
    "rul_mae_naive",
)


class NotEnoughData(ValueError):
    """The examples cannot support an honest train/test split."""


# -- slices and splits ---------------------------------------------------------------------------


def equipment_position(equipment_id: str) -> float:
    """A stable position in [0, 1) per equipment: the same slice in every retrain."""
    digest = hashlib.sha256(equipment_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def is_test_equipment(equipment_id: str, fraction: float, fold: int = 0) -> bool:
    """Held out (gate or report slice) in fold `fold`: the k-th slice of `fraction` of the
    fleet (fold 0 is what training and the gate use; the benches rotate through the others)."""
    return (equipment_position(equipment_id) - fold * fraction) % 1.0 < fraction


def slice_of(equipment_id: str, fraction: float, fold: int = 0) -> str:
    """'gate', 'report' or 'train' for an equipment in fold `fold`."""
    offset = (equipment_position(equipment_id) - fold * fraction) % 1.0
    if offset < fraction / 2:
        return "gate"
    return "report" if offset < fraction else "train"


def history_kind(frame: pd.DataFrame) -> str:
    """run_to_failure when most units' histories end in their failure (a recorded failure
    follows their last row within two of their usual steps, and nothing follows it), else
    continuous."""
    if frame.empty or "next_failure_at" not in frame.columns:
        return CONTINUOUS
    ordered = frame.sort_values(["equipment_id", "ts"])
    step = ordered.groupby("equipment_id")["ts"].diff().groupby(ordered["equipment_id"]).median()
    last = ordered.groupby("equipment_id").tail(1).set_index("equipment_id")
    ends = (last["next_failure_at"] - last["ts"]) <= 2 * step.reindex(last.index)
    return RUN_TO_FAILURE if ends.fillna(False).mean() >= 0.5 else CONTINUOUS


@dataclass
class HeldOut:
    """Held-out rows. Failures, alerts and rows count from `start` on; earlier rows are the
    look-back context of the failures after it (None: every row counts; a Series: a start per
    equipment id, for held-out rows pooled from several histories)."""

    rows: pd.DataFrame
    start: pd.Timestamp | pd.Series | None = None

    @property
    def counted(self) -> np.ndarray:
        """Per row: does it count (at or after its equipment's start)?"""
        return counted_rows(self.rows, self.start)

    @property
    def period(self) -> pd.DataFrame:
        """The rows that count."""
        return self.rows[self.counted]

    @property
    def equipment(self) -> int:
        return int(self.rows["equipment_id"].nunique())

    def __add__(self, other: HeldOut) -> HeldOut:
        return HeldOut(pd.concat([self.rows, other.rows]), self.start)


def counted_rows(rows: pd.DataFrame, start: pd.Timestamp | pd.Series | None) -> np.ndarray:
    """Per row: at or after `start` (one time, or one per equipment id)."""
    if start is None:
        return np.ones(len(rows), dtype=bool)
    if isinstance(start, pd.Series):
        return (rows["ts"] >= rows["equipment_id"].map(start)).to_numpy(dtype=bool)
    return (rows["ts"] >= start).to_numpy(dtype=bool)


def _start_of(start: pd.Timestamp | pd.Series | None, equipment_id: str) -> np.datetime64 | None:
    if start is None:
        return None
    if isinstance(start, pd.Series):
        start = start.get(equipment_id)
        if start is None or pd.isna(start):
            return None
    return np.datetime64(pd.Timestamp(start).tz_convert(None), "ns")


@dataclass
class Split:
    train: pd.DataFrame
    gate: HeldOut
    report: HeldOut
    kind: str = CONTINUOUS
    windows: dict[str, Any] = field(default_factory=dict)

    @property
    def held_out(self) -> HeldOut:
        """Gate and report slices together (the benches pool them: no gate runs there)."""
        return self.gate + self.report


def _final_rows(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows whose label can no longer change.

    Continuous: the last H days of history are unlabelled, not healthy (a failure just after
    the data ends would make them positives), and the whole period goes, not only its open
    rows: keeping the rows already known to precede a failure would leave it all positives.
    Run-to-failure: units are not aligned in time, so each unit loses only its own open rows
    (a unit cut before its failure)."""
    if LABEL_FINAL not in frame.columns or frame[LABEL_FINAL].all():
        return frame
    open_rows = ~frame[LABEL_FINAL].to_numpy(dtype=bool)
    if kind == RUN_TO_FAILURE:
        return frame[~open_rows]
    return frame[frame["ts"] < frame.loc[open_rows, "ts"].min()]


def split_examples(
    frame: pd.DataFrame,
    settings: Settings | None = None,
    fold: int = 0,
    pooled: bool = False,
    kind: str | None = None,
) -> Split:
    """Split labelled examples into training rows and the gate and report slices (see the module
    docstring); `fold` holds out another slice (0: what training and the gate use). `pooled`:
    the held-out part is one of several evaluated together, so it may hold no failure."""
    settings = settings or get_settings()
    if frame.empty:
        raise NotEnoughData(
            "no training examples in analytics.mart_training_examples: "
            "import the fleet's history (`emps fleet import PACK`, or let devices report for a "
            "while; a demo can simulate one with `emps simulate backfill`), then run the dbt build"
        )
    kind = kind or history_kind(frame)
    frame = _final_rows(frame, kind)
    fraction = settings.ml.test_equipment_fraction
    ids = frame["equipment_id"].drop_duplicates()
    slices = pd.Series({i: slice_of(i, fraction, fold) for i in ids})
    where = frame["equipment_id"].map(slices)
    start, end = frame["ts"].min(), frame["ts"].max()
    windows: dict[str, Any] = {
        "split": kind,
        "data_start": start.isoformat(),
        "data_end": end.isoformat(),
        "train_equipment": int((slices == "train").sum()),
        "gate_equipment": int((slices == "gate").sum()),
        "report_equipment": int((slices == "report").sum()),
    }
    if kind == RUN_TO_FAILURE:
        split = Split(
            train=frame[where == "train"],
            gate=HeldOut(frame[where == "gate"]),
            report=HeldOut(frame[where == "report"]),
            kind=kind,
            windows=windows,
        )
    else:
        gap = horizon(settings)
        span = end - start
        test_start = end - span * settings.ml.test_time_fraction
        train_end = test_start - gap
        if train_end - start < gap:
            raise NotEnoughData(
                f"the examples span {span.days} days ({start:%Y-%m-%d} to {end:%Y-%m-%d}), too "
                f"short for train and test with a {horizon_days(settings):g}-day gap between "
                "them; import a longer history or let the fleet report for longer"
            )
        context_start = test_start - LOOKBACK_HORIZONS * gap
        recent = frame["ts"] >= context_start
        split = Split(
            train=frame[(where == "train") & (frame["ts"] < train_end)],
            gate=HeldOut(frame[(where == "gate") & recent], test_start),
            report=HeldOut(frame[(where == "report") & recent], test_start),
            kind=kind,
            windows={
                **windows,
                "train_end": train_end.isoformat(),
                "test_start": test_start.isoformat(),
                "test_end": end.isoformat(),
            },
        )
    _check_parts(split, settings, pooled)
    return split


def _check_parts(split: Split, settings: Settings, pooled: bool) -> None:
    """Training needs failing and healthy rows; held-out slices are counted, not required to
    hold a failure (the figures say n/a and why)."""
    train = split.train
    positives = int(train[LABEL].sum()) if len(train) else 0
    split.windows["train_rows"] = len(train)
    split.windows["train_positives"] = positives
    for name in ("gate", "report"):
        period = getattr(split, name).period
        split.windows[f"{name}_rows"] = len(period)
        split.windows[f"{name}_positives"] = int(period[LABEL].sum()) if len(period) else 0
    if positives == 0 or positives == len(train):
        raise NotEnoughData(
            f"the training part of the split has {len(train)} rows and {positives} of them "
            f"precede a failure within {horizon_days(settings):g} days: it needs both failing "
            "and healthy rows; import more equipment or a longer history, or record the failures "
            "that happened (`emps failures record|import`)"
        )
    if not pooled and split.report.rows.empty:
        raise NotEnoughData(
            "no equipment falls in the report slice: register more equipment, or raise "
            "EMPS_ML_TEST_EQUIPMENT_FRACTION"
        )


def kfold_splits(
    frame: pd.DataFrame, folds: int, settings: Settings | None = None
) -> list[tuple[pd.DataFrame, HeldOut]]:
    """Grouped k-fold over all units of a run-to-failure history: (training rows, held-out
    units) per fold, each unit held out exactly once (folds by its stable position)."""
    settings = settings or get_settings()
    frame = _final_rows(frame, RUN_TO_FAILURE)
    ids = frame["equipment_id"].drop_duplicates()
    if len(ids) < folds:
        raise NotEnoughData(
            f"{len(ids)} units cannot be split into {folds} folds: import more units or lower "
            "EMPS_ML_CV_FOLDS"
        )
    fold_of = frame["equipment_id"].map(
        {i: min(int(equipment_position(i) * folds), folds - 1) for i in ids}
    )
    return [(frame[fold_of != k], HeldOut(frame[fold_of == k])) for k in range(folds)]


# -- per-equipment facts the figures need --------------------------------------------------------


@dataclass
class _TypeClock:
    horizon_s: float
    life_s: float
    unit: str


def _clocks(rows: pd.DataFrame, catalog: Catalog | None) -> dict[str, _TypeClock]:
    """Horizon and life unit of each equipment type in the rows."""
    catalog = catalog or load_catalog()
    clocks = {}
    for name, etype in catalog.equipment_types.items():
        clocks[name] = _TypeClock(
            etype.horizon_seconds, etype.clock.life_unit_seconds, etype.clock.life_unit
        )
    default = _TypeClock(catalog.max_horizon_days * 86400.0, 86400.0, "day")
    types = rows["equipment_type"].dropna().unique() if "equipment_type" in rows else []
    return {t: clocks.get(t, default) for t in types} | {"": default}


def life_unit(catalog: Catalog | None = None) -> str:
    """The unit remaining life and lead times are told in: the types' common life unit
    ('day', 'cycle'), or 'life unit' when types differ."""
    catalog = catalog or load_catalog()
    units = {t.clock.life_unit for t in catalog.equipment_types.values()}
    return units.pop() if len(units) == 1 else "life unit"


def _observed_until(rows: pd.DataFrame) -> pd.Series:
    """Per equipment, until when its history is known (the mart's last observation, which the
    rows may stop short of; else the rows' own last time)."""
    last = rows.groupby("equipment_id")["ts"].max()
    if "last_observed_at" in rows.columns:
        known = pd.to_datetime(rows.groupby("equipment_id")["last_observed_at"].max(), utc=True)
        last = pd.concat([last, known], axis=1).max(axis=1)
    return last


# -- event-level figures at the alerting band ----------------------------------------------------


@dataclass
class _EquipmentEvents:
    """One equipment's share of the event figures (summed over equipment, resampled by it)."""

    failures: int = 0  # evaluated failures that could warn (non-sudden when known)
    warned: int = 0  # ... warned at least the inspection lead ahead
    alerted: int = 0  # ... with any alert in their look-back
    sudden: int = 0
    sudden_warned: int = 0
    leads: list[float] = field(default_factory=list)  # life units, 0 = missed
    episodes: int = 0  # alert episodes starting in the period
    false_episodes: int = 0
    undetermined_episodes: int = 0
    period_s: float = 0.0  # time the rows in the period stand for
    classifiable_s: float = 0.0  # ... of it, when an alert's outcome is known
    equipment_id: str = ""
    # When each evaluated failure happened, its lead (life units, 0 = missed) and whether it
    # was sudden; when each counted alert episode began and its outcome (EPISODE_OUTCOMES).
    failure_log: list[tuple[np.datetime64, float, bool]] = field(default_factory=list)
    episode_log: list[tuple[np.datetime64, str]] = field(default_factory=list)


def _row_seconds(ts: np.ndarray) -> np.ndarray:
    """The time each row stands for: until the next row, at most twice the usual step (a gap
    in the data is not time the model watched)."""
    if len(ts) < 2:
        return np.full(len(ts), 3600.0)
    gaps = np.diff(ts).astype("timedelta64[s]").astype(float)
    step = float(np.median(gaps))
    return np.append(np.minimum(gaps, 2 * step), step)


def _equipment_events(
    ts: np.ndarray,
    alerting: np.ndarray,
    failures: pd.DataFrame,
    clock: _TypeClock,
    start: np.datetime64 | None,
    observed_until: np.datetime64,
    merge_s: float,
    inspection_units: float,
) -> _EquipmentEvents:
    facts = _EquipmentEvents()
    lookback = np.timedelta64(int(LOOKBACK_HORIZONS * clock.horizon_s), "s")
    failed = failures["failed_at"].to_numpy(dtype="datetime64[ns]")
    repaired = (
        failures["repaired_at"].to_numpy(dtype="datetime64[ns]")
        if "repaired_at" in failures
        else np.full(len(failed), np.datetime64("NaT"), dtype="datetime64[ns]")
    )
    sudden = failures["sudden"].to_numpy(dtype=bool) if "sudden" in failures else None
    weights = _row_seconds(ts)
    counted = np.ones(len(ts), dtype=bool) if start is None else ts >= start
    step = np.timedelta64(int(2 * np.median(weights)), "s")

    # Failures: the first alert in the look-back before each, in the type's life unit.
    for i, failed_at in enumerate(failed):
        if start is not None and failed_at < start:
            continue
        if not len(ts) or failed_at > ts[-1] + step or failed_at < ts[0]:
            continue  # outside the rows (after their end, or before their context)
        earlier = failed[:i]
        life_start = max(
            [failed_at - lookback, ts[0]]
            + [r if not np.isnat(r) else f for f, r in zip(earlier, repaired[:i], strict=True)]
        )
        window = (ts >= life_start) & (ts < failed_at) & alerting
        lead = (
            float((failed_at - ts[window][0]) / np.timedelta64(1, "s")) / clock.life_s
            if window.any()
            else 0.0
        )
        is_sudden = sudden is not None and bool(sudden[i])
        facts.failure_log.append((failed_at, lead, is_sudden))
        if is_sudden:
            facts.sudden += 1
            facts.sudden_warned += lead >= inspection_units
            continue
        facts.failures += 1
        facts.alerted += lead > 0
        facts.warned += lead >= inspection_units
        facts.leads.append(lead)

    # Alert episodes: runs of alerting rows; an alert stays open through gaps shorter than the
    # auto-resolve time, and a failure (the machine is repaired) closes it.
    facts.period_s = float(weights[counted].sum())
    after = np.searchsorted(failed, ts, side="right")  # index of each row's next failure
    padded = np.append(failed, np.datetime64("NaT", "ns"))  # "no next failure" past the end
    next_failure = padded[after]
    known = ~np.isnat(next_failure) & (next_failure - ts <= lookback)
    classifiable = known | (ts + lookback <= observed_until)
    facts.classifiable_s = float(weights[counted & classifiable].sum())
    alert_rows = np.nonzero(alerting)[0]
    merge = np.timedelta64(int(merge_s), "s")
    previous = None
    for row in alert_rows:
        new = (
            previous is None
            or ts[row] - ts[previous] > merge
            or after[row] != after[previous]  # a failure in between
        )
        previous = row
        if not new or not counted[row]:
            continue
        facts.episodes += 1
        if known[row]:
            facts.episode_log.append((ts[row], TRUE_ALERT))
        elif classifiable[row]:
            facts.false_episodes += 1
            facts.episode_log.append((ts[row], FALSE_ALERT))
        else:
            facts.undetermined_episodes += 1
            facts.episode_log.append((ts[row], UNDETERMINED_ALERT))
    return facts


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """The exact binomial interval of successes / trials (NaN without trials)."""
    if trials == 0:
        return float("nan"), float("nan")
    alpha = 1 - level
    low = beta.ppf(alpha / 2, successes, trials - successes + 1) if successes else 0.0
    high = beta.ppf(1 - alpha / 2, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def poisson_interval(count: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Garwood) interval of a Poisson count: what a count of rare events says, also
    when it is zero (0 events: 0 to 3.69)."""
    alpha = 1 - level
    low = chi2.ppf(alpha / 2, 2 * count) / 2 if count else 0.0
    return float(low), float(chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)


def _resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """resamples x n multiplicities of n equipment drawn with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, (resamples, n))
    counts = np.zeros((resamples, n), dtype=np.int32)
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    return counts


def _interval(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def equipment_events(
    rows: pd.DataFrame,
    probability: np.ndarray,
    failures: pd.DataFrame | None,
    settings: Settings | None = None,
    start: pd.Timestamp | pd.Series | None = None,
    catalog: Catalog | None = None,
) -> list[_EquipmentEvents]:
    """Per equipment, the failures, leads and alert episodes at the alerting band that
    event_figures counts, with when each happened (`failure_log`, `episode_log`): what a
    backtest tells week by week."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    clocks = _clocks(rows, catalog)
    alerting = np.asarray(probability) >= settings.thresholds.severity_high
    if SINCE_SERVICE in rows and "equipment_type" in rows:
        # As the alert rules do: nothing alerts while a service or repair settles (emps.ml.assess).
        alerting &= ~settling_rows(
            rows[SINCE_SERVICE].to_numpy(dtype=np.float64, na_value=np.nan),
            rows["equipment_type"].to_numpy(dtype=object),
            catalog,
        )
    if failures is None:
        failures = pd.DataFrame(
            {
                "equipment_id": pd.Series(dtype=str),
                "failed_at": pd.Series(dtype="datetime64[ns, UTC]"),
            }
        )
    failures = failures.assign(
        **{
            column: pd.to_datetime(failures[column], utc=True).dt.tz_convert(None)
            for column in ("failed_at", "repaired_at")
            if column in failures
        }
    )
    by_equipment = dict(tuple(failures.sort_values("failed_at").groupby("equipment_id")))
    empty = failures.iloc[0:0]
    observed = _observed_until(rows)
    frame = rows[["equipment_id", "ts"]].assign(
        _alert=alerting, _type=rows.get("equipment_type", "")
    )
    facts = []
    for equipment_id, group in frame.sort_values(["equipment_id", "ts"]).groupby("equipment_id"):
        facts.append(
            _equipment_events(
                group["ts"].dt.tz_convert(None).to_numpy(dtype="datetime64[ns]"),
                group["_alert"].to_numpy(dtype=bool),
                by_equipment.get(equipment_id, empty),
                clocks.get(group["_type"].iloc[0], clocks[""]),
                _start_of(start, equipment_id),
                np.datetime64(observed[equipment_id].tz_convert(None), "ns"),
                settings.alerting.auto_resolve_healthy_hours * 3600.0,
                float(settings.alerting.inspection_within_days),
            )
        )
        facts[-1].equipment_id = str(equipment_id)
    return facts


def event_figures(
    rows: pd.DataFrame,
    probability: np.ndarray,
    failures: pd.DataFrame | None,
    settings: Settings | None = None,
    start: pd.Timestamp | pd.Series | None = None,
    catalog: Catalog | None = None,
    fleet_equipment: int | None = None,
    resamples: int = INTERVAL_RESAMPLES,
) -> dict[str, float]:
    """Event-level figures at the alerting band (HIGH: EMPS_SEVERITY_HIGH, or the band in force
    when `settings` carries the admins' thresholds).

    rows: held-out feature rows (equipment_id, ts, equipment_type; optional last_observed_at)
    with `probability` each; failures: equipment_id, failed_at (optional repaired_at, and
    `sudden`, a failure no sensor foretold: counted apart); `start`: failures and alerts count
    from here, earlier rows are look-back context; `fleet_equipment`: the fleet size alerts per
    week are told for (default: the equipment in `rows`).

    - failures_warned_share: the share of (non-sudden) failures whose first alert in the 3 H
      before them came at least EMPS_INSPECTION_WITHIN_DAYS life units (days, or cycles...)
      ahead; 95 % interval Clopper-Pearson over failures (`_ci95_*`) and from resampling the
      equipment (`_boot95_*`);
    - lead distribution: median_lead and lead_p10/p25/p75/p90 over those failures (0 = missed);
    A row settling after a service or repair (emps.ml.assess.settling_rows) alerts on nothing, as in
    the alert rules.

    - false_alert_episodes_per_100_equipment_months: alert episodes (a run of HIGH+ rows; gaps
      shorter than EMPS_AUTO_RESOLVE_HEALTHY_HOURS do not close one, a failure does) not
      followed by a failure within 3 H, per 100 months of equipment time whose outcome is known;
    - alerts_per_100_equipment_weeks and alerts_per_week (for the fleet's size).
    Intervals of rates come from resampling the equipment (a machine's rows rise and fall
    together; per-row or per-episode intervals would be far too narrow), widened to at least
    the exact Poisson interval of the count (a rate of 0 still has an upper end).
    """
    facts = equipment_events(rows, probability, failures, settings, start, catalog)
    return _event_summary(facts, fleet_equipment or len(facts), resamples)


def lead_times(
    rows: pd.DataFrame,
    probability: np.ndarray,
    failures: pd.DataFrame | None,
    settings: Settings | None = None,
    start: pd.Timestamp | pd.Series | None = None,
    catalog: Catalog | None = None,
) -> np.ndarray:
    """Each evaluated failure's lead in life units (0 = missed), as event_figures counts them."""
    facts = equipment_events(rows, probability, failures, settings, start, catalog)
    return np.asarray([lead for f in facts for lead in f.leads], dtype=float)


def _event_summary(
    facts: list[_EquipmentEvents], fleet_equipment: int, resamples: int
) -> dict[str, float]:
    n = len(facts)

    def column(name: str) -> np.ndarray:
        return np.array([getattr(f, name) for f in facts], dtype=float)

    failures, warned, alerted = column("failures"), column("warned"), column("alerted")
    episodes, false = column("episodes"), column("false_episodes")
    months = column("classifiable_s") / 86400 / DAYS_PER_MONTH
    weeks = column("period_s") / 86400 / 7
    leads = [np.asarray(f.leads, dtype=float) for f in facts]
    all_leads = np.concatenate(leads) if leads else np.array([])
    evaluated, hits = int(failures.sum()), int(warned.sum())

    def ratio(top: np.ndarray, bottom: np.ndarray, scale: float = 1.0) -> float:
        total = bottom.sum()
        return float(scale * top.sum() / total) if total > 0 else float("nan")

    result: dict[str, float] = {
        "failures_evaluated": float(evaluated),
        "failures_warned": float(hits),
        "failures_alerted": float(alerted.sum()),
        "failures_sudden": float(column("sudden").sum()),
        "failures_sudden_warned": float(column("sudden_warned").sum()),
        "failures_warned_share": hits / evaluated if evaluated else float("nan"),
        "failures_alerted_share": float(alerted.sum()) / evaluated if evaluated else float("nan"),
        "median_lead": float(np.median(all_leads)) if len(all_leads) else float("nan"),
        "alert_episodes": float(episodes.sum()),
        "false_alert_episodes": float(false.sum()),
        "undetermined_alert_episodes": float(column("undetermined_episodes").sum()),
        "equipment_months": float(months.sum()),
        "false_alert_episodes_per_100_equipment_months": ratio(false, months, 100.0),
        "alerts_per_100_equipment_weeks": ratio(episodes, weeks, 100.0),
        "equipment_evaluated": float(n),
        "fleet_equipment": float(fleet_equipment),
    }
    for q in (10, 25, 75, 90):
        result[f"lead_p{q}"] = (
            float(np.percentile(all_leads, q)) if len(all_leads) else float("nan")
        )
    result["alerts_per_week"] = result["alerts_per_100_equipment_weeks"] / 100 * fleet_equipment
    low, high = clopper_pearson(hits, evaluated)
    result["failures_warned_share_ci95_low"], result["failures_warned_share_ci95_high"] = low, high

    # Equipment-level bootstrap: each resample draws the equipment with replacement.
    nan2 = (float("nan"), float("nan"))
    intervals = dict.fromkeys(
        (
            "failures_warned_share_boot95",
            "median_lead",
            "false_alert_episodes_per_100_equipment_months",
            "alerts_per_100_equipment_weeks",
        ),
        nan2,
    )
    failing = int((failures > 0).sum())
    if n >= INTERVAL_MIN_EQUIPMENT:
        counts = _resample_counts(n, resamples, seed=7)
        with np.errstate(invalid="ignore", divide="ignore"):
            intervals["false_alert_episodes_per_100_equipment_months"] = _interval(
                100 * (counts @ false) / (counts @ months)
            )
            intervals["alerts_per_100_equipment_weeks"] = _interval(
                100 * (counts @ episodes) / (counts @ weeks)
            )
            if failing >= INTERVAL_MIN_EQUIPMENT:
                intervals["failures_warned_share_boot95"] = _interval(
                    (counts @ warned) / (counts @ failures)
                )
                medians = []
                for weights in counts[: min(resamples, 200)]:
                    repeated = [
                        np.repeat(lead, w) for lead, w in zip(leads, weights, strict=True) if w
                    ]
                    pooled = np.concatenate(repeated) if repeated else np.array([])
                    medians.append(np.median(pooled) if len(pooled) else np.nan)
                intervals["median_lead"] = _interval(np.asarray(medians))
    # Resampling a handful of events (or none) gives a narrow or empty interval: a rate's
    # interval is at least the exact Poisson interval of its count over the time observed.
    for key, count, time in (
        ("false_alert_episodes_per_100_equipment_months", false.sum(), months.sum()),
        ("alerts_per_100_equipment_weeks", episodes.sum(), weeks.sum()),
    ):
        drawn = intervals[key]
        if time > 0 and not np.isnan(drawn).all():  # too few machines: no interval at all
            exact = [100 * bound / time for bound in poisson_interval(int(count))]
            intervals[key] = (
                float(np.nanmin([drawn[0], exact[0]])),
                float(np.nanmax([drawn[1], exact[1]])),
            )
    for key, (low, high) in intervals.items():
        name = key.removesuffix("_boot95")
        suffix = "boot95" if key.endswith("_boot95") else "ci95"
        result[f"{name}_{suffix}_low"], result[f"{name}_{suffix}_high"] = low, high
    scale = fleet_equipment / 100
    result["alerts_per_week_ci95_low"] = result["alerts_per_100_equipment_weeks_ci95_low"] * scale
    result["alerts_per_week_ci95_high"] = result["alerts_per_100_equipment_weeks_ci95_high"] * scale
    return result


# -- remaining life ------------------------------------------------------------------------------


def _per_row(rows: pd.DataFrame, catalog: Catalog | None, attribute: str) -> np.ndarray:
    """A type clock's attribute for every row."""
    clocks = _clocks(rows, catalog)
    types = rows["equipment_type"] if "equipment_type" in rows else pd.Series("", rows.index)
    values = {name: getattr(clock, attribute) for name, clock in clocks.items()}
    return types.map(values).fillna(values[""]).to_numpy(dtype=float)


def remaining_life_truth(
    rows: pd.DataFrame, catalog: Catalog | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(remaining life in life units, censored) per row. A censored row (no failure known
    after it) gets the lower bound its history gives: the time until the history ends."""
    life_s = _per_row(rows, catalog, "life_s")
    if "remaining_life" in rows:
        known = rows["remaining_life"].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        days = rows[DAYS_LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
        known = days * 86400.0 / life_s
    censored = np.isnan(known)
    until = rows["equipment_id"].map(_observed_until(rows))
    bound = (until - rows["ts"]).dt.total_seconds().to_numpy(dtype=float) / life_s
    return np.where(censored, np.maximum(bound, 0.0), known), censored


def _capped_errors(
    predicted: np.ndarray, truth: np.ndarray, censored: np.ndarray, cap: np.ndarray
) -> np.ndarray:
    """|estimate - truth| with both capped at `cap`; a censored row whose bound is under the cap
    counts the error the bound proves (how far the estimate falls short of it), never more."""
    shown = np.minimum(predicted, cap)
    target = np.minimum(truth, cap)
    exact = ~censored | (truth >= cap)
    return np.where(exact, np.abs(shown - target), np.maximum(target - shown, 0.0))


def remaining_life_figures(
    rows: pd.DataFrame,
    predicted: np.ndarray,
    cap: np.ndarray | float,
    naive: np.ndarray | float,
    catalog: Catalog | None = None,
    resamples: int = INTERVAL_RESAMPLES,
) -> dict[str, float]:
    """Remaining-life error on every row the product shows an estimate for, in life units.

    `predicted`: each row's estimate as shown (at most `cap`: beyond it the product shows
    "more than cap"); `cap`: per row or one value; `naive`: the baseline's constant estimate
    (per row or one value), fitted on training rows. Censored rows (no failure known after
    them) are counted with the error their history proves (see _capped_errors).

    - rul_mae_displayed / rul_rmse_displayed: against the truth capped at `cap`, with a 95 %
      interval of the MAE from resampling the equipment; rul_mae_naive / rul_rmse_naive: the
      same for the naive constant;
    - rul_rmse / rul_mae: against the uncapped truth, on rows whose failure is known;
    - rul_mae_within_horizon: rows within one failure horizon of a known failure;
    - rul_rows, rul_rows_censored.
    """
    predicted = np.asarray(predicted, dtype=float)
    shown = ~np.isnan(predicted)
    rows = rows[shown]
    predicted = predicted[shown]
    row_cap = np.broadcast_to(np.asarray(cap, dtype=float), shown.shape)[shown]
    row_naive = np.broadcast_to(np.asarray(naive, dtype=float), shown.shape)[shown]
    nan = float("nan")
    if not len(rows):
        return {"rul_rows": 0.0, "rul_rows_censored": 0.0, "rul_mae_displayed": nan}
    truth, censored = remaining_life_truth(rows, catalog)
    error = _capped_errors(predicted, truth, censored, row_cap)
    naive_error = _capped_errors(row_naive, truth, censored, row_cap)
    known = ~censored
    near = known & (
        truth * _per_row(rows, catalog, "life_s") <= _per_row(rows, catalog, "horizon_s")
    )
    shown_predicted = np.minimum(predicted, row_cap)

    def mae(values: np.ndarray, where: np.ndarray | None = None) -> float:
        values = values if where is None else values[where]
        return float(np.mean(values)) if len(values) else nan

    def rmse(values: np.ndarray, where: np.ndarray | None = None) -> float:
        values = values if where is None else values[where]
        return float(np.sqrt(np.mean(values**2))) if len(values) else nan

    result = {
        "rul_rows": float(len(rows)),
        "rul_rows_censored": float(censored.sum()),
        "rul_mae_displayed": mae(error),
        "rul_rmse_displayed": rmse(error),
        "rul_mae_naive": mae(naive_error),
        "rul_rmse_naive": rmse(naive_error),
        "rul_mae": mae(np.abs(shown_predicted - truth), known),
        "rul_rmse": rmse(shown_predicted - truth, known),
        "rul_mae_within_horizon": mae(np.abs(shown_predicted - truth), near),
    }
    equipment = rows["equipment_id"].to_numpy()
    codes, index = np.unique(equipment, return_inverse=True)
    nan2 = (nan, nan)
    for key, values in (("rul_mae_displayed", error), ("rul_mae_naive", naive_error)):
        low_high = nan2
        if len(codes) >= INTERVAL_MIN_EQUIPMENT:
            sums = np.bincount(index, weights=values, minlength=len(codes))
            counts = np.bincount(index, minlength=len(codes)).astype(float)
            draws = _resample_counts(len(codes), resamples, seed=11)
            with np.errstate(invalid="ignore", divide="ignore"):
                low_high = _interval((draws @ sums) / (draws @ counts))
        result[f"{key}_ci95_low"], result[f"{key}_ci95_high"] = low_high
    return result


def figures_on_test_units(
    model: Any, units: pd.DataFrame, catalog: Catalog | None = None
) -> dict[str, float]:
    """Remaining-life error on a fleet pack's test units (dataset.read_test_units: each unit's
    last row and its true remaining life), the figure run-to-failure benchmarks are compared
    by: `test_units`, and remaining_life_figures' figures prefixed `test_units_` (the MAE and
    RMSE as shown, capped, next to the naive constant's, intervals from resampling the units)."""
    if units.empty:
        return {}
    predictions = predict_rows(model, units)
    figures = remaining_life_figures(
        units, predictions.remaining_life, predictions.cap, predictions.naive, catalog
    )
    return {"test_units": float(len(units))} | {
        f"test_units_{key}": value for key, value in figures.items()
    }


# -- row-level figures (ranking and calibration, no threshold) -----------------------------------


def row_figures(labels: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """PR-AUC, ROC-AUC, Brier score and its skill over the base rate, per held-out row."""
    nan = float("nan")
    both = labels.any() and not labels.all()
    base = labels.mean() if len(labels) else nan
    brier = float(skm.brier_score_loss(labels, probability)) if len(labels) else nan
    reference = base * (1 - base)
    return {
        "pr_auc": float(skm.average_precision_score(labels, probability)) if both else nan,
        "roc_auc": float(skm.roc_auc_score(labels, probability)) if both else nan,
        "brier": brier,
        # Brier skill over always predicting the base rate: ~0 for a model that learned nothing.
        "brier_skill": float(1 - brier / reference) if both else nan,
        "heldout_rows": float(len(labels)),
        "heldout_positive_rate": float(base),
    }


ROW_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pr_auc": skm.average_precision_score,
    "roc_auc": skm.roc_auc_score,
    "brier": skm.brier_score_loss,
}
LOWER_IS_BETTER = frozenset({"brier"})


# -- everything at once ----------------------------------------------------------------------------


@dataclass
class Predictions:
    """What a model says about held-out rows: failure probability and remaining life (life
    units, at most the cap), with the cap and the naive baseline's estimate per row."""

    probability: np.ndarray
    remaining_life: np.ndarray
    cap: np.ndarray
    naive: np.ndarray


def predict_rows(model: Any, rows: pd.DataFrame) -> Predictions:
    """What a FailureModel says about each row, as the scorer would show it."""
    X = model.matrix(rows)
    score = model.forest_score(X)
    types = rows["equipment_type"].to_numpy(dtype=object) if "equipment_type" in rows else None
    life, _ = model.remaining_life(score, types, X)
    return Predictions(
        probability=model.calibrate(score),
        remaining_life=life,
        cap=model.per_type(types, "cap", len(rows)),
        naive=model.per_type(types, "naive", len(rows)),
    )


def evaluate_model(
    model: Any,
    held: HeldOut,
    failures: pd.DataFrame | None = None,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    fleet_equipment: int | None = None,
) -> dict[str, float]:
    """Every figure for `model` on held-out rows (see evaluate_predictions)."""
    return evaluate_predictions(
        held, predict_rows(model, held.rows), failures, settings, catalog, fleet_equipment
    )


def evaluate_predictions(
    held: HeldOut,
    predictions: Predictions,
    failures: pd.DataFrame | None = None,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    fleet_equipment: int | None = None,
    resamples: int = INTERVAL_RESAMPLES,
) -> dict[str, float]:
    """Every figure for predictions on held-out rows: event-level at the alerting band
    (event_figures), remaining life (remaining_life_figures) and row-level ranking and
    calibration (row_figures), the last two over the rows that count (`held.period`)."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    rows = held.rows
    counts = held.counted
    period = rows[counts]
    result = row_figures(period[LABEL].to_numpy(dtype=bool), predictions.probability[counts])
    result |= event_figures(
        rows,
        predictions.probability,
        failures,
        settings,
        held.start,
        catalog,
        fleet_equipment,
        resamples,
    )
    result |= remaining_life_figures(
        period,
        predictions.remaining_life[counts],
        predictions.cap[counts],
        predictions.naive[counts],
        catalog,
        resamples,
    )
    result["alert_band"] = float(settings.thresholds.severity_high)
    result["inspection_lead"] = float(settings.alerting.inspection_within_days)
    return result


def headline(metrics: dict[str, float]) -> dict[str, float | None]:
    """The `emps model evaluate --json` line: the headline figures, NaN as null."""
    return {
        key: (
            None
            if metrics.get(key) is None or not np.isfinite(metrics[key])
            else round(float(metrics[key]), 4)
        )
        for key in HEADLINE_KEYS
    }


# -- comparing two models on the same held-out equipment -----------------------------------------


@dataclass
class Comparison:
    """How much better the challenger is than the champion on the same held-out rows: the
    improvement (positive = better, in the metric's direction) and its 95 % interval from
    resampling the held-out equipment, both models on the same draw each time."""

    metric: str
    challenger: float
    champion: float
    improvement: float
    low: float
    high: float
    failures: int
    equipment: int


def heldout_failures(rows: pd.DataFrame) -> int:
    """How many distinct failures the held-out rows precede within the horizon."""
    positive = rows[rows[LABEL].to_numpy(dtype=bool)]
    if "next_failure_at" not in positive:
        return int(positive["equipment_id"].nunique())
    return int(positive[["equipment_id", "next_failure_at"]].drop_duplicates().shape[0])


def paired_comparison(
    rows: pd.DataFrame,
    challenger: np.ndarray,
    champion: np.ndarray,
    metric: str,
    resamples: int = INTERVAL_RESAMPLES,
    seed: int = 13,
) -> Comparison:
    """Paired bootstrap over equipment of challenger minus champion in `metric` (a ROW_METRICS
    name): each resample draws the held-out equipment with replacement and scores both models
    on the same rows, so what they share (which failures were hard) cancels out."""
    score = ROW_METRICS[metric]
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    labels = rows[LABEL].to_numpy(dtype=bool)
    equipment = rows["equipment_id"].to_numpy()
    groups = list(pd.Series(np.arange(len(rows))).groupby(equipment).indices.values())

    def both(index: np.ndarray) -> float:
        y = labels[index]
        if metric != "brier" and (y.all() or not y.any()):
            return float("nan")
        return sign * (score(y, challenger[index]) - score(y, champion[index]))

    everything = np.arange(len(rows))
    new = float(score(labels, challenger)) if labels.any() else float("nan")
    old = float(score(labels, champion)) if labels.any() else float("nan")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples if len(groups) >= INTERVAL_MIN_EQUIPMENT else 0):
        picked = rng.integers(0, len(groups), len(groups))
        draws.append(both(np.concatenate([groups[i] for i in picked])))
    low, high = _interval(np.asarray(draws, dtype=float))
    return Comparison(
        metric=metric,
        challenger=new,
        champion=old,
        improvement=both(everything) if labels.any() else float("nan"),
        low=low,
        high=high,
        failures=heldout_failures(rows),
        equipment=len(groups),
    )
