"""Honest evaluation: held-out equipment AND a later period, separated by a label-horizon gap.

Timeline of the examples (span = first to last feature row):

    | train (train equipment) | gap H | test (test equipment) |

A training row's label looks H days ahead, so the gap keeps the training labels from seeing the
test period. Calibration needs rows the forest did not learn from too; rather than carve a third
period out of the history (two months of simulated history left a fortnight to train on, too few
failures to learn from or to calibrate with), training cross-fits: forests fitted on some training
equipment vote on the others (ml.train). Test equipment is chosen by a hash of its id, so it is
never seen in training and stays the same across retrains (the promotion gate compares models on
it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from emps.settings import Settings, get_settings
from ml.dataset import DAYS_LABEL, LABEL, LABEL_FINAL, horizon, horizon_days
from ml.model import FailureModel

HEADLINE_KEYS = (
    "recall",
    "precision",
    "fpr",
    "median_lead_days",
    "rul_mae_days",
    "brier",
    "accuracy",
)
RUL_WITHIN_DAYS = 14.0
# Resamples of the held-out equipment behind the 95 % intervals (`<figure>_ci95_low|high`).
INTERVAL_RESAMPLES = 200
INTERVAL_MIN_EQUIPMENT = 3


class NotEnoughData(ValueError):
    """The examples cannot support an honest train/test split."""


@dataclass
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    windows: dict[str, Any] = field(default_factory=dict)


def is_test_equipment(equipment_id: str, fraction: float, fold: int = 0) -> bool:
    """Stable hold-out: the same equipment is test equipment in every retrain. Fold k holds out
    the k-th slice of the same size instead (bench/model_quality rotates through them)."""
    digest = hashlib.sha256(equipment_id.encode()).digest()
    position = int.from_bytes(digest[:4], "big") / 2**32
    return (position - fold * fraction) % 1.0 < fraction


def split_examples(
    frame: pd.DataFrame,
    settings: Settings | None = None,
    fold: int = 0,
    pooled: bool = False,
) -> Split:
    """Split labelled examples by equipment and by time (see the module docstring); `fold` picks
    another slice of equipment to hold out (0, what training and the promotion gate use).
    `pooled`: the test part is one of several whose predictions are evaluated together, so it
    may hold no failure (its healthy rows still count)."""
    settings = settings or get_settings()
    if frame.empty:
        raise NotEnoughData(
            "no training examples in analytics.mart_training_examples: "
            "backfill history (`emps simulate backfill`) and run the dbt build first"
        )
    if LABEL_FINAL in frame.columns and not frame[LABEL_FINAL].all():
        # The last H days of history are unlabelled, not healthy: a failure just after the data
        # ends would make them positives, and counting them as negatives trains and scores the
        # model against the truth. The whole period goes, not only its open rows: keeping the
        # rows already known to precede a failure would leave that period all positives.
        open_from = frame.loc[~frame[LABEL_FINAL].to_numpy(dtype=bool), "ts"].min()
        frame = frame[frame["ts"] < open_from]
    gap = horizon(settings)
    start, end = frame["ts"].min(), frame["ts"].max()
    span = end - start
    test_start = end - span * settings.ml_test_time_fraction
    train_end = test_start - gap
    if train_end - start < gap:
        raise NotEnoughData(
            f"the examples span {span.days} days ({start:%Y-%m-%d} to {end:%Y-%m-%d}), too short "
            f"for train and test with a {horizon_days(settings):g}-day gap between them; "
            "backfill more history"
        )
    ids = frame["equipment_id"].drop_duplicates()
    fraction = settings.ml_test_equipment_fraction
    test_ids = {i for i in ids if is_test_equipment(i, fraction, fold)}
    held_out = frame["equipment_id"].isin(test_ids)
    split = Split(
        train=frame[~held_out & (frame["ts"] < train_end)],
        test=frame[held_out & (frame["ts"] >= test_start)],
        windows={
            "data_start": start.isoformat(),
            "data_end": end.isoformat(),
            "train_end": train_end.isoformat(),
            "test_start": test_start.isoformat(),
            "test_end": end.isoformat(),
            "train_equipment": int(len(ids) - len(test_ids)),
            "test_equipment": len(test_ids),
        },
    )
    for name in ("train", "test"):
        part = getattr(split, name)
        positives = int(part[LABEL].sum()) if len(part) else 0
        split.windows[f"{name}_rows"] = len(part)
        split.windows[f"{name}_positives"] = positives
        if (positives == 0 and not (pooled and name == "test")) or positives == len(part):
            raise NotEnoughData(
                f"the {name} part of the split has {len(part)} rows and {positives} of them precede "
                f"a failure within {horizon_days(settings):g} days: it needs both failing and "
                "healthy rows; backfill more equipment or a longer history"
            )
    return split


def choose_threshold(
    probability: np.ndarray, labels: np.ndarray, settings: Settings | None = None
) -> float:
    """The operating threshold by the configured policy, chosen on out-of-fold training votes."""
    settings = settings or get_settings()
    if settings.ml_threshold_policy == "severity_high":
        return settings.severity_high
    precision, recall, thresholds = skm.precision_recall_curve(labels, probability)
    precision, recall = precision[:-1], recall[:-1]
    if settings.ml_threshold_policy == "max_f1":
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
        return float(thresholds[int(np.argmax(f1))])
    reaching = np.nonzero(precision >= settings.ml_target_precision)[0]
    return float(thresholds[reaching[0]]) if len(reaching) else float(thresholds[-1])


def _lead_days(
    test: pd.DataFrame, alerting: np.ndarray, failures: pd.DataFrame, horizon: pd.Timedelta
) -> tuple[list[float], int]:
    """Days between the first HIGH+ prediction in the horizon before each failure and the failure.

    Only failures whose whole look-back lies in the test period count; a missed failure has lead 0.
    """
    if failures is None or failures.empty:
        return [], 0
    test_start = test["ts"].min()
    frame = test[["equipment_id", "ts"]].assign(_alert=alerting)
    by_equipment = dict(tuple(frame.groupby("equipment_id")))
    leads = []
    for row in failures.itertuples(index=False):
        rows = by_equipment.get(row.equipment_id)
        if rows is None or row.failed_at - horizon < test_start or row.failed_at > test["ts"].max():
            continue
        window = rows[(rows["ts"] >= row.failed_at - horizon) & (rows["ts"] < row.failed_at)]
        fired = window[window["_alert"]]
        leads.append(
            (row.failed_at - fired["ts"].min()).total_seconds() / 86400 if len(fired) else 0.0
        )
    return leads, sum(1 for lead in leads if lead > 0)


def _alert_onsets(test: pd.DataFrame, alerting: np.ndarray) -> int:
    """How many alerts would open: an equipment going from below HIGH to HIGH+ (one open at a time)."""
    frame = test[["equipment_id", "ts"]].assign(_alert=alerting).sort_values(["equipment_id", "ts"])
    previous = frame.groupby("equipment_id")["_alert"].shift(fill_value=False)
    return int((frame["_alert"] & ~previous).sum())


def evaluate_model(
    model: FailureModel,
    test: pd.DataFrame,
    failures: pd.DataFrame | None = None,
    settings: Settings | None = None,
) -> dict[str, float]:
    """Every figure of the issue for `model` on the test rows (see HEADLINE_KEYS for the headline)."""
    probability, days = predict_rows(model, test)
    return evaluate_predictions(test, probability, days, model.threshold, failures, settings)


def predict_rows(model: FailureModel, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What evaluation scores: each row's failure probability, and its predicted days until
    failure where the truth is within RUL_WITHIN_DAYS (NaN elsewhere)."""
    X = model.matrix(test)
    probability = model.failure_probability(X)
    days = np.full(len(test), np.nan)
    near = (test[DAYS_LABEL].notna() & (test[DAYS_LABEL] <= RUL_WITHIN_DAYS)).to_numpy()
    if near.any() and model.regressor is not None:
        days[near] = model.days_until_failure(X[near], probability[near])
    return probability, days


def evaluate_predictions(
    test: pd.DataFrame,
    probability: np.ndarray,
    days: np.ndarray,
    threshold: float | np.ndarray,
    failures: pd.DataFrame | None = None,
    settings: Settings | None = None,
) -> dict[str, float]:
    """The figures of `evaluate_model` from predictions already made: the failure probability and
    predicted days until failure (NaN where not predicted) of each test row, and the operating
    threshold (per row when the rows were scored by different models)."""
    settings = settings or get_settings()
    labels = test[LABEL].to_numpy(dtype=bool)
    predicted = probability >= threshold
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[False, True]).ravel()
    alerting = probability >= settings.severity_high
    leads, detected = _lead_days(test, alerting, failures, horizon(settings))
    spans = test.groupby("equipment_id")["ts"].agg(["min", "max"])
    equipment_days = float(((spans["max"] - spans["min"]).dt.total_seconds() / 86400).sum())
    result = {
        "threshold": float(np.median(threshold)),
        "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
        "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
        "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        "fpr": float(fp / (fp + tn)) if fp + tn else 0.0,
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "pr_auc": float(skm.average_precision_score(labels, probability)),
        "roc_auc": float(skm.roc_auc_score(labels, probability)),
        "brier": float(skm.brier_score_loss(labels, probability)),
        # Brier skill over always predicting the base rate: ~0 for a model that learned nothing.
        "brier_skill": _brier_skill(labels, probability),
        "recall_at_target_precision": best_recall(
            labels, probability, settings.ml_target_precision
        )[1],
        "median_lead_days": float(np.median(leads)) if leads else float("nan"),
        "failures_evaluated": float(len(leads)),
        "failures_detected": float(detected),
        "alerts_per_100_equipment_days": (
            100.0 * _alert_onsets(test, alerting) / equipment_days if equipment_days else 0.0
        ),
        "test_rows": float(len(test)),
        "test_positive_rate": float(labels.mean()),
    }
    actual = test[DAYS_LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    scored = (actual <= RUL_WITHIN_DAYS) & ~np.isnan(days)  # NaN compares False
    error = np.where(scored, np.abs(days - actual), np.nan)
    result["rul_mae_days"] = float(np.nanmean(error)) if scored.any() else float("nan")

    def recall(rows: np.ndarray) -> float:
        return _share(predicted[rows][labels[rows]])

    def recall_at_target(rows: np.ndarray) -> float:
        return best_recall(labels[rows], probability[rows], settings.ml_target_precision)[1]

    def mae(rows: np.ndarray) -> float:
        return _share(error[rows][scored[rows]])

    # Each figure with an interval: its statistic of some rows, and the rows it rests on.
    statistics = {
        "recall": (recall, labels),
        "recall_at_target_precision": (recall_at_target, labels),
        "rul_mae_days": (mae, scored),
    }
    equipment = test["equipment_id"].to_numpy()
    for key, (statistic, informative) in statistics.items():
        low, high = equipment_interval(equipment, statistic, informative)
        result[f"{key}_ci95_low"], result[f"{key}_ci95_high"] = low, high
    return result


def equipment_interval(
    equipment: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    informative: np.ndarray,
    resamples: int = INTERVAL_RESAMPLES,
    seed: int = 7,
) -> tuple[float, float]:
    """The 95 % interval of statistic(row indices) over resamples of the equipment with
    replacement. Equipment is the unit because a machine's rows rise and fall together: a few
    failures carry most of the positive rows, so per-row intervals would be far too narrow.
    NaN when fewer than INTERVAL_MIN_EQUIPMENT machines have `informative` rows (the failing
    ones, for recall): resampling one or two failures says nothing of the next."""
    if len(np.unique(equipment[informative])) < INTERVAL_MIN_EQUIPMENT:
        return float("nan"), float("nan")
    groups = list(pd.Series(np.arange(len(equipment))).groupby(equipment).indices.values())
    rng = np.random.default_rng(seed)
    values = [
        statistic(np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))]))
        for _ in range(resamples)
    ]
    if np.isnan(values).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _share(values: np.ndarray) -> float:
    """The mean of values (booleans: the share that is true), NaN when there are none."""
    return float(np.mean(values)) if len(values) else float("nan")


def best_recall(
    labels: np.ndarray, probability: np.ndarray, precision_floor: float
) -> tuple[float | None, float]:
    """(threshold, recall): the best recall any threshold reaches at precision >= the floor, and
    that threshold (None, 0.0 when none does; None, NaN without positives)."""
    if not labels.any():
        return None, float("nan")
    precision, recall, thresholds = skm.precision_recall_curve(labels, probability)
    reaching = np.nonzero(precision[:-1] >= precision_floor)[0]
    if not len(reaching):
        return None, 0.0
    best = reaching[np.argmax(recall[reaching])]
    return float(thresholds[best]), float(recall[best])


def _brier_skill(labels: np.ndarray, probability: np.ndarray) -> float:
    base = labels.mean()
    reference = base * (1 - base)
    return float(1 - skm.brier_score_loss(labels, probability) / reference) if reference else 0.0


def headline(metrics: dict[str, float]) -> dict[str, float | None]:
    """The `emps model evaluate --json` line: the issue's acceptance figures, NaN as null."""
    return {
        key: (
            None if metrics.get(key) is None or np.isnan(metrics[key]) else round(metrics[key], 4)
        )
        for key in HEADLINE_KEYS
    }
