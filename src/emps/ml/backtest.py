"""Backtest (shadow replay): what a model and a set of severity bands would have done over stored
history, week by week, before anyone promotes the model or saves the bands.

A model scores the feature rows the dbt build kept (one row per equipment per sampling step, as
training reads them); the alert episodes, warned failures and leads are the evaluation's own
(`emps.ml.evaluate.equipment_events`), at the HIGH band of the bands tried. Scoring does not depend
on the bands, so one scored history (`score_history`) replays under any bands (`replay`) at
almost no cost: the Admin page tries the bands an admin types against the same scores.

The replay scores every equipment, also those the model learnt from: a model looks better on
history it was trained on. `emps model evaluate` gives the held-out figures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from emps.catalog import Catalog, load_catalog
from emps.ml import registry
from emps.ml.assess import SINCE_SERVICE
from emps.ml.dataset import (
    THRESHOLD_KEYS,
    horizon,
    read_failure_events,
    read_feature_history,
    registered_equipment,
    sample_step_minutes,
    with_admin_thresholds,
)
from emps.ml.evaluate import (
    FALSE_ALERT,
    LOOKBACK_HORIZONS,
    UNDETERMINED_ALERT,
    equipment_events,
    life_unit,
)
from emps.settings import Settings, get_settings

WEEK = pd.Timedelta(days=7)
# Rows scored per step of the progress report.
CHUNK_ROWS = 50_000
WARNED, LATE, MISSED = "warned", "late", "missed"
# The columns a replay keeps of the feature rows (the features themselves are only scored).
KEPT_COLUMNS = ("equipment_id", "ts", "equipment_type", SINCE_SERVICE, "last_observed_at")

# Told (done, to do) as scoring goes: equipment read from the mart, or the rows given.
OnProgress = Callable[[int, int], None]


def _quiet(done: int, total: int) -> None:
    """No progress to show."""


class NoModel(LookupError):
    """The model asked for is not registered (or no version holds the alias)."""


# -- bands -----------------------------------------------------------------------------------------


def bands_of(settings: Settings) -> dict[str, float]:
    """The severity bands a settings object carries: {severity_medium: .., severity_high: ..,
    severity_critical: ..}."""
    return {key: float(getattr(settings.thresholds, key)) for key in THRESHOLD_KEYS}


def with_bands(settings: Settings, bands: dict[str, float]) -> Settings:
    """The settings with other severity bands; a ValueError when they do not rise."""
    update = {key: float(value) for key, value in bands.items()}
    merged = {**bands_of(settings), **update}
    if not merged["severity_medium"] < merged["severity_high"] < merged["severity_critical"]:
        raise ValueError(
            f"severity bands must rise: MEDIUM {merged['severity_medium']:g} < HIGH "
            f"{merged['severity_high']:g} < CRITICAL {merged['severity_critical']:g}"
        )
    return settings.replace(thresholds=merged)


_BAND_NAMES = {
    "medium": "severity_medium",
    "high": "severity_high",
    "critical": "severity_critical",
}


def parse_bands(text: str) -> dict[str, float]:
    """Bands as typed on the command line: three rising probabilities 'MEDIUM,HIGH,CRITICAL'
    ('0.3,0.5,0.85'), or some of them by name ('high=0.5' or 'high=0.5,critical=0.9')."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        if parts and all("=" not in part for part in parts):
            if len(parts) != 3:
                raise ValueError
            return dict(zip(THRESHOLD_KEYS, (float(p) for p in parts), strict=True))
        bands: dict[str, float] = {}
        for part in parts:
            name, value = (piece.strip() for piece in part.split("=", 1))
            bands[_BAND_NAMES[name.lower().removeprefix("severity_")]] = float(value)
    except (ValueError, KeyError):
        raise ValueError(
            f"bands {text!r}: give three rising probabilities MEDIUM,HIGH,CRITICAL "
            "(e.g. 0.3,0.5,0.85) or name the ones to change (e.g. high=0.5)"
        ) from None
    for key, band in bands.items():
        if not 0 < band < 1:
            raise ValueError(f"bands {text!r}: {key.removeprefix('severity_')} must lie in (0, 1)")
    if not bands:
        raise ValueError("bands: none given")
    return bands


# -- reading and scoring ---------------------------------------------------------------------------


def score_rows(model: Any, rows: pd.DataFrame, on_progress: OnProgress = _quiet) -> np.ndarray:
    """The model's failure probability for each row, scored in chunks (progress per chunk)."""
    probability = np.empty(len(rows))
    on_progress(0, len(rows))
    for first in range(0, len(rows), CHUNK_ROWS):
        chunk = rows.iloc[first : first + CHUNK_ROWS]
        probability[first : first + len(chunk)] = model.failure_probability(model.matrix(chunk))
        on_progress(first + len(chunk), len(rows))
    return probability


@dataclass
class ScoredHistory:
    """Feature rows (only the columns a replay needs) and a model's probability for each,
    with the recorded failures: what replays under any bands."""

    start: pd.Timestamp
    end: pd.Timestamp
    model_version: str
    rows: pd.DataFrame
    probability: np.ndarray
    failures: pd.DataFrame
    step_minutes: int


def score_history(
    model: Any,
    version: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    settings: Settings | None = None,
    rows: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
    on_progress: OnProgress = _quiet,
) -> ScoredHistory:
    """Score the history from `start` to `end` (read from the features mart unless `rows` are
    given, e.g. the training examples already in memory) with `model`."""
    settings = settings or get_settings()
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError(f"the backtest ends ({end:%Y-%m-%d}) before it starts ({start:%Y-%m-%d})")
    if rows is None:
        return _score_stored_history(model, version, start, end, settings, failures, on_progress)
    # Read at the training step, or training examples thinned at theirs.
    step = int(
        rows.attrs.get("step_minutes", rows.attrs.get("sample_minutes", settings.ml.sample_minutes))
    )
    lookback = LOOKBACK_HORIZONS * horizon(settings)
    rows = rows[(rows["ts"] >= start - lookback) & (rows["ts"] < end)]
    failures = read_failure_events(settings) if failures is None else failures
    probability = score_rows(model, rows, on_progress) if len(rows) else np.empty(0)
    kept = [c for c in KEPT_COLUMNS if c in rows.columns]
    return ScoredHistory(
        start, end, str(version), rows[kept].reset_index(drop=True), probability, failures, step
    )


def _score_stored_history(
    model: Any,
    version: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
    settings: Settings,
    failures: pd.DataFrame | None,
    on_progress: OnProgress,
) -> ScoredHistory:
    """Read and score the features mart a batch of equipment at a time, keeping only the few
    columns a replay needs: a long window over a big fleet never sits in memory whole."""
    step = sample_step_minutes(settings)
    span = end - start + LOOKBACK_HORIZONS * horizon(settings)
    per_equipment = max(int(span / pd.Timedelta(minutes=step)), 1)
    equipment = registered_equipment(None, settings)
    batch = max(CHUNK_ROWS // per_equipment, 1)
    kept, scores = [], []
    on_progress(0, len(equipment))
    for first in range(0, len(equipment), batch):
        ids = equipment[first : first + batch]
        rows = read_feature_history(start, end, settings, step, LOOKBACK_HORIZONS, ids)
        if len(rows):
            scores.append(model.failure_probability(model.matrix(rows)))
            kept.append(rows[[c for c in KEPT_COLUMNS if c in rows.columns]])
        on_progress(first + len(ids), len(equipment))
    failures = read_failure_events(settings) if failures is None else failures
    rows = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=list(KEPT_COLUMNS))
    probability = np.concatenate(scores) if scores else np.empty(0)
    return ScoredHistory(start, end, str(version), rows, probability, failures, step)


def _utc(value: Any) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# -- the replay ------------------------------------------------------------------------------------


@dataclass
class Figures:
    """What the alerting would have done over a stretch of time."""

    alerts: int = 0  # alert episodes beginning in it
    false_alerts: int = 0  # ... followed by no failure within the look-back
    undetermined_alerts: int = 0  # ... too recent to tell
    failures: int = 0  # failures in it
    warned: int = 0  # ... whose first alert came at least the inspection lead ahead
    late: int = 0  # ... alerted, but later than that
    missed: int = 0  # ... with no alert before them
    leads: list[float] = field(default_factory=list)  # of the alerted ones, in life units

    @property
    def median_lead(self) -> float | None:
        return float(np.median(self.leads)) if self.leads else None

    def as_dict(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["leads"] = [round(lead, 2) for lead in self.leads]
        facts["median_lead"] = None if self.median_lead is None else round(self.median_lead, 2)
        return facts


@dataclass
class Week(Figures):
    week_start: pd.Timestamp = field(kw_only=True)

    def as_dict(self) -> dict[str, Any]:
        facts = super().as_dict()
        del facts["week_start"]
        return {"week_start": self.week_start.isoformat(), **facts}


@dataclass
class FailureOutcome:
    equipment_id: str
    failed_at: pd.Timestamp
    lead: float  # life units, 0 = missed
    outcome: str  # warned, late or missed


@dataclass
class Backtest:
    """Per week and in total: alert episodes, failures warned (and how early), false alerts."""

    start: pd.Timestamp
    end: pd.Timestamp
    model_version: str
    bands: dict[str, float]
    inspection_lead: float
    life_unit: str
    equipment: int
    rows: int
    step_minutes: int
    weeks: list[Week]
    total: Figures
    failures: list[FailureOutcome]

    @property
    def alerts_per_week(self) -> float:
        return self.total.alerts / max((self.end - self.start) / WEEK, 1e-9)

    def summary(self) -> str:
        """'N alerts, M of K failures warned ≥ 3 days ahead'."""
        return (
            f"{self.total.alerts} alert{'' if self.total.alerts == 1 else 's'}, "
            f"{self.total.warned} of {self.total.failures} failure"
            f"{'' if self.total.failures == 1 else 's'} warned ≥ {self.inspection_lead:g} "
            f"{self.life_unit}s ahead"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "model_version": self.model_version,
            "bands": self.bands,
            "inspection_lead": self.inspection_lead,
            "life_unit": self.life_unit,
            "equipment": self.equipment,
            "rows": self.rows,
            "step_minutes": self.step_minutes,
            "alerts_per_week": round(self.alerts_per_week, 3),
            "weeks": [week.as_dict() for week in self.weeks],
            "total": self.total.as_dict(),
            "failures": [
                {
                    "equipment_id": f.equipment_id,
                    "failed_at": f.failed_at.isoformat(),
                    "lead": round(f.lead, 2),
                    "outcome": f.outcome,
                }
                for f in self.failures
            ],
        }

    def weeks_frame(self) -> pd.DataFrame:
        """One row per week: week_start and the counts (for charts)."""
        return pd.DataFrame(
            [
                {
                    "week_start": w.week_start,
                    "alerts": w.alerts,
                    "false_alerts": w.false_alerts,
                    "failures": w.failures,
                    "warned": w.warned,
                    "late": w.late,
                    "missed": w.missed,
                    "median_lead": w.median_lead,
                }
                for w in self.weeks
            ]
        )


def replay(
    history: ScoredHistory,
    settings: Settings | None = None,
    bands: dict[str, float] | None = None,
    catalog: Catalog | None = None,
) -> Backtest:
    """What the alerting would have done over the scored history with `bands` (default: those
    `settings` carry): the evaluation's episodes and leads, bucketed into weeks from the start."""
    settings = settings or get_settings()
    settings = with_bands(settings, bands or {})
    catalog = catalog or load_catalog(settings.catalog_path)
    start, end = history.start, history.end
    count = int(np.ceil((end - start) / WEEK))
    weeks = [Week(week_start=start + i * WEEK) for i in range(count)]
    total = Figures()
    outcomes: list[FailureOutcome] = []
    inspection = float(settings.alerting.inspection_within_days)

    def week_of(moment: np.datetime64) -> Week | None:
        stamp = pd.Timestamp(moment).tz_localize("UTC")
        if not start <= stamp < end:
            return None
        return weeks[int((stamp - start) // WEEK)]

    rows = history.rows
    events = (
        equipment_events(rows, history.probability, history.failures, settings, start, catalog)
        if len(rows)
        else []
    )
    for facts in events:
        for began, outcome in facts.episode_log:
            week = week_of(began)
            if week is None:
                continue
            for figures in (week, total):
                figures.alerts += 1
                figures.false_alerts += outcome == FALSE_ALERT
                figures.undetermined_alerts += outcome == UNDETERMINED_ALERT
        for failed_at, lead, _sudden in facts.failure_log:
            week = week_of(failed_at)
            if week is None:
                continue
            result = WARNED if lead >= inspection else LATE if lead > 0 else MISSED
            for figures in (week, total):
                figures.failures += 1
                figures.warned += result == WARNED
                figures.late += result == LATE
                figures.missed += result == MISSED
                if lead > 0:
                    figures.leads.append(lead)
            outcomes.append(
                FailureOutcome(
                    facts.equipment_id, pd.Timestamp(failed_at).tz_localize("UTC"), lead, result
                )
            )
    return Backtest(
        start=start,
        end=end,
        model_version=history.model_version,
        bands=bands_of(settings),
        inspection_lead=inspection,
        life_unit=life_unit(catalog),
        equipment=int(rows["equipment_id"].nunique()) if len(rows) else 0,
        rows=int((rows["ts"] >= start).sum()) if len(rows) else 0,
        step_minutes=history.step_minutes,
        weeks=weeks,
        total=total,
        failures=sorted(outcomes, key=lambda f: f.failed_at),
    )


# -- which model -----------------------------------------------------------------------------------


def resolve_version(reference: str, settings: Settings | None = None) -> str:
    """The registered version `reference` names: 'champion', 'challenger' or a version number."""
    settings = settings or get_settings()
    if reference in (registry.CHAMPION, registry.CHALLENGER):
        version = registry.alias_version(reference, settings)
        if version is None:
            raise NoModel(
                f"no '{reference}' version of model '{settings.ml.model_name}': train one with "
                "`emps model train`, or give a version number"
            )
        return version
    if not re.fullmatch(r"\d+", reference):
        raise NoModel(f"--model {reference!r}: give champion, challenger or a version number")
    return reference


def load_model(version: str, settings: Settings | None = None) -> Any:
    """A registered version's model, loaded only if its files are what EMPS recorded."""
    settings = settings or get_settings()
    try:
        model, _ = registry.load_version(
            version, settings, registry.recorded_digest(version, settings)
        )
    except registry.ModelIntegrityError:
        raise  # says itself what is wrong with the files
    except Exception as error:  # no such version, registry unreachable
        raise NoModel(
            f"model '{settings.ml.model_name}' version {version} cannot be loaded "
            f"({type(error).__name__}: {error}); `emps model list` shows the versions"
        ) from error
    return model


def run_backtest(
    start: Any,
    end: Any,
    model: str = "champion",
    bands: dict[str, float] | None = None,
    settings: Settings | None = None,
    on_progress: OnProgress = _quiet,
) -> Backtest:
    """Score the stored history from `start` to `end` with a registered model ('champion',
    'challenger' or a version) and replay it with `bands` (default: the bands in force)."""
    settings = with_admin_thresholds(settings)
    if bands:
        settings = with_bands(settings, bands)
    version = resolve_version(model, settings)
    history = score_history(
        load_model(version, settings), version, start, end, settings, on_progress=on_progress
    )
    return replay(history, settings)


def window_before(end: Any, weeks: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(start, end) of the `weeks` weeks up to `end`."""
    end = _utc(end)
    return end - weeks * WEEK, end


def tags_for(backtest: Backtest, prefix: str = "backtest.") -> dict[str, str]:
    """A backtest's totals as MLflow tags (`backtest.alert_episodes`, ...)."""
    total = backtest.total
    values: dict[str, Any] = {
        "from": backtest.start.isoformat(),
        "to": backtest.end.isoformat(),
        "model_version": backtest.model_version,
        "bands": ",".join(f"{v:g}" for v in backtest.bands.values()),
        "alert_episodes": total.alerts,
        "false_alert_episodes": total.false_alerts,
        "undetermined_alert_episodes": total.undetermined_alerts,
        "alerts_per_week": round(backtest.alerts_per_week, 3),
        "failures": total.failures,
        "failures_warned": total.warned,
        "failures_late": total.late,
        "failures_missed": total.missed,
        "median_lead": "" if total.median_lead is None else round(total.median_lead, 2),
        "summary": backtest.summary(),
    }
    return {f"{prefix}{key}": str(value) for key, value in values.items()}
