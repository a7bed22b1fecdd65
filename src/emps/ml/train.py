"""Training: fit the forest, calibrate it on out-of-fold votes, tabulate remaining life against
the same votes, evaluate on equipment it never saw, log everything to MLflow and register the
version as `challenger`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from emps.catalog import Catalog, load_catalog
from emps.ml import registry
from emps.ml.assess import profile_training_rows
from emps.ml.backtest import Backtest, load_model, replay, score_history, tags_for, window_before
from emps.ml.dataset import (
    LABEL,
    feature_columns,
    feature_label,
    horizon_days,
    read_failure_events,
    read_test_units,
    read_training_examples,
    with_admin_thresholds,
)
from emps.ml.evaluate import (
    LOOKBACK_HORIZONS,
    RUN_TO_FAILURE,
    SPLIT_NAMES,
    HeldOut,
    NotEnoughData,
    Predictions,
    Split,
    evaluate_predictions,
    figures_on_test_units,
    kfold_splits,
    lead_times,
    life_unit,
    predict_rows,
    remaining_life_truth,
    split_examples,
)
from emps.ml.model import FailureModel
from emps.settings import PROJECT_ROOT, Settings, get_settings

log = logging.getLogger(__name__)
# Remaining life is estimated up to this (default, in a type's counter unit) for counter clocks:
# the usual cap for run-to-failure engines, whose wear shows only in their last ~100 cycles.
COUNTER_RUL_CAP = 125.0
# The life table: medians over bands of out-of-fold votes, at most this many bands, each of at
# least this many rows.
LIFE_BANDS = 200
LIFE_ROWS_PER_BAND = 200
# The life forest learns from at most this many rows (a seeded sample of a longer history).
LIFE_FOREST_MAX_ROWS = 200_000

# Told the description of each step of a training run as it starts (a progress bar, a flow's log).
OnStep = Callable[[str], None]


def _quiet(description: str) -> None:
    """No progress to show."""


def training_steps(settings: Settings, kind: str = "continuous") -> int:
    """How many steps train_and_register reports: one forest per calibration fold, the forest,
    calibration and remaining life, the life forest, evaluation, the backtest and MLflow, and for a
    run-to-failure history one per cross-validation fold (fewer calibration folds when few
    machines failed)."""
    cv = settings.ml.cv_folds if kind == RUN_TO_FAILURE else 0
    return settings.ml.calibration_folds + 6 + cv


def rul_cap(etype, settings: Settings) -> float:
    """How far a type's remaining life is estimated, in its life unit (EMPS_ML_RUL_CAP, else
    125 for counter clocks and three failure horizons for wall-time clocks)."""
    if settings.ml.rul_cap is not None:
        return float(settings.ml.rul_cap)
    if etype.clock.kind == "counter":
        return COUNTER_RUL_CAP
    return LOOKBACK_HORIZONS * etype.horizon_seconds / etype.clock.life_unit_seconds


def type_clocks(
    frame: pd.DataFrame, catalog: Catalog, settings: Settings
) -> dict[str, dict[str, Any]]:
    """Per equipment type: its life unit, the unit's seconds, its horizon and remaining-life cap
    in that unit, and the naive estimate (the median capped remaining life of its training
    rows; the pooled one, in horizons, for a type without training rows)."""
    truth, censored = remaining_life_truth(frame, catalog)
    types = frame["equipment_type"].to_numpy(dtype=object)
    clocks: dict[str, dict[str, Any]] = {}
    pooled: list[float] = []
    for name, etype in catalog.equipment_types.items():
        unit_seconds = etype.clock.life_unit_seconds
        cap = rul_cap(etype, settings)
        horizon = etype.horizon_seconds / unit_seconds
        mine = types == name
        known = mine & (~censored | (truth >= cap))
        naive = float(np.median(np.minimum(truth[known], cap))) if known.any() else float("nan")
        if known.any():
            pooled.append(naive / horizon)
        clocks[name] = {
            "unit": etype.clock.life_unit,
            "unit_seconds": float(unit_seconds),
            "horizon": float(horizon),
            "cap": float(cap),
            "naive": naive,
        }
    fallback = float(np.median(pooled)) if pooled else 1.0
    for clock in clocks.values():
        if np.isnan(clock["naive"]):
            clock["naive"] = min(fallback * clock["horizon"], clock["cap"])
    return clocks


def fit_life_table(
    votes: np.ndarray, frame: pd.DataFrame, model: FailureModel, catalog: Catalog
) -> tuple[np.ndarray, np.ndarray]:
    """Remaining life (in horizons, capped) against out-of-fold votes: the median remaining
    life of the rows in each band of votes, made never to rise with the vote (isotonic, weighted
    by the rows per band), so a higher probability never reads as a longer life.

    The median, not the mean: the error that counts is absolute, and a healthy machine's
    estimate should read "more than" the cap, not an average of the cap and the few failures
    that hid among its neighbours. Rows censored under the cap (no failure known, history too
    short to prove the cap) stay out."""
    truth, censored = remaining_life_truth(frame, catalog)
    types = frame["equipment_type"].to_numpy(dtype=object)
    horizon = model.per_type(types, "horizon", len(frame))
    cap = model.per_type(types, "cap", len(frame))
    known = ~censored | (truth >= cap)
    target = (np.minimum(truth, cap) / horizon)[known]
    votes = votes[known]
    if len(target) < 2:
        return np.array([0.0, 1.0]), np.full(2, float(np.nanmedian(cap / horizon)))
    bands = int(np.clip(len(target) // LIFE_ROWS_PER_BAND, 10, LIFE_BANDS))
    edges = np.unique(np.quantile(votes, np.linspace(0, 1, bands + 1)))
    band = np.clip(np.searchsorted(edges, votes, side="right") - 1, 0, max(len(edges) - 2, 0))
    frame = pd.DataFrame({"band": band, "vote": votes, "life": target}).groupby("band")
    summary = frame.agg(vote=("vote", "median"), life=("life", "median"), rows=("life", "size"))
    isotonic = IsotonicRegression(out_of_bounds="clip", increasing=False)
    isotonic.fit(summary["vote"], summary["life"], sample_weight=summary["rows"])
    return (
        np.asarray(isotonic.X_thresholds_, dtype=np.float64),
        np.asarray(isotonic.y_thresholds_, dtype=np.float64),
    )


def fit_life_forest(
    X: np.ndarray, frame: pd.DataFrame, model: FailureModel, catalog: Catalog, settings: Settings
) -> RandomForestRegressor | None:
    """A regressor of the remaining life, as a share of the type's cap, on the features: what
    tells a machine with much wear left from one with little, beyond the horizon the vote sees.
    Fitted on the rows whose capped life is known (as the life table), at most
    LIFE_FOREST_MAX_ROWS of them; leaves hold at least 1/5000 of them, so the forest stays small
    and quick whatever the history's length."""
    truth, censored = remaining_life_truth(frame, catalog)
    types = frame["equipment_type"].to_numpy(dtype=object)
    cap = model.per_type(types, "cap", len(frame))
    known = ~censored | (truth >= cap)
    if known.sum() < 2 * settings.ml.min_samples_leaf:
        return None
    forest = RandomForestRegressor(
        n_estimators=max(10, settings.ml.n_estimators // 2),
        min_samples_leaf=max(
            settings.ml.min_samples_leaf, min(int(known.sum()), LIFE_FOREST_MAX_ROWS) // 5000
        ),
        max_features=0.5,
        max_samples=settings.ml.max_samples if settings.ml.max_samples < 1 else None,
        n_jobs=settings.ml.n_jobs,
        random_state=settings.ml.seed,
    )
    rows = np.flatnonzero(known)
    if len(rows) > LIFE_FOREST_MAX_ROWS:  # a long history: a seeded sample tells wear as well
        rng = np.random.default_rng(settings.ml.seed)
        rows = np.sort(rng.choice(rows, LIFE_FOREST_MAX_ROWS, replace=False))
    return forest.fit(X[rows], (np.minimum(truth, cap) / cap)[rows])


def fit_model(
    train: pd.DataFrame | Split,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    on_step: OnStep = _quiet,
    drop_features: Sequence[str] = (),
) -> FailureModel:
    """Fit the classifier on the training rows; calibrate, and tabulate remaining life, on votes
    the forest cast on equipment it was not fitted on. `drop_features` leaves catalog features
    out (an ablation: how much the model leans on them)."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    train = train.train if isinstance(train, Split) else train
    features = feature_columns(list(train.columns), catalog)
    unknown = sorted(set(drop_features) - set(features))
    if unknown:
        raise ValueError(
            f"cannot drop {', '.join(unknown)}: not among the model's features "
            f"({', '.join(features)})"
        )
    features = [name for name in features if name not in drop_features]
    model = FailureModel(
        feature_names=features,
        feature_labels={name: list(feature_label(name, catalog)) for name in features},
        horizon_days=horizon_days(settings),
        threshold=settings.thresholds.severity_high,
    )
    X = model.matrix(train)
    y = train[LABEL].to_numpy(dtype=bool)
    forest = RandomForestClassifier(
        n_estimators=settings.ml.n_estimators,
        min_samples_leaf=settings.ml.min_samples_leaf,
        max_features="sqrt",
        max_samples=settings.ml.max_samples if settings.ml.max_samples < 1 else None,
        n_jobs=settings.ml.n_jobs,
        random_state=settings.ml.seed,
    )
    votes = out_of_fold_votes(forest, X, y, train["equipment_id"], settings, on_step)
    on_step(f"fitting {settings.ml.n_estimators} trees on {len(y):,} training rows")
    model.classifier = clone(forest).fit(X, y)
    on_step("calibrating probabilities and tabulating remaining life")
    calibration = fit_calibration(votes, y, train["equipment_id"], settings)
    model.calibration_method = calibration.method
    model.calibration_x, model.calibration_y = calibration.x, calibration.y
    model.clocks = type_clocks(train, catalog, settings)
    model.life_x, model.life_y = fit_life_table(votes, train, model, catalog)
    on_step("fitting the life forest (remaining life beyond the horizon)")
    model.life_forest = fit_life_forest(X, train, model, catalog, settings)
    model.assessment_profile = profile_training_rows(train, features, catalog)
    return model


def out_of_fold_votes(
    forest: RandomForestClassifier,
    X: np.ndarray,
    y: np.ndarray,
    equipment: pd.Series,
    settings: Settings,
    on_step: OnStep = _quiet,
) -> np.ndarray:
    """Each training row's failure vote from a forest fitted without its equipment.

    Whole equipment go to one fold: an hour of a machine looks like its neighbouring hours, so a
    forest that saw those would vote as if it knew the row, and the calibration would trust the
    forest more than it deserves.
    """
    failing = equipment[y].nunique()
    folds = min(settings.ml.calibration_folds, failing)
    if folds < 2:
        raise NotEnoughData(
            f"{failing} training equipment failed in the training period; calibrating needs at "
            "least two: import more equipment or a longer history, or record the failures that "
            "happened (`emps failures record|import`)"
        )
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.ml.seed)
    votes = np.zeros(len(y))
    for fold, (fit_rows, vote_rows) in enumerate(cv.split(X, y, groups=equipment), 1):
        on_step(f"out-of-fold votes: forest {fold} of {folds}")
        fitted = clone(forest).fit(X[fit_rows], y[fit_rows])
        if True in fitted.classes_:  # a fold whose fitting machines never failed votes 0
            failing = list(fitted.classes_).index(True)
            votes[vote_rows] = fitted.predict_proba(X[vote_rows])[:, failing]
    return votes


@dataclass
class Calibration:
    method: str
    x: np.ndarray  # forest votes ...
    y: np.ndarray  # ... and the probabilities they map to (np.interp between them)
    cv_brier: dict[str, float]  # each method's Brier on equipment its calibrator did not see


def _isotonic(votes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    isotonic = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    isotonic.fit(votes, y.astype(float))
    return (
        np.asarray(isotonic.X_thresholds_, dtype=np.float64),
        np.asarray(isotonic.y_thresholds_, dtype=np.float64),
    )


def _sigmoid(votes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Platt scaling of the vote, tabulated finely enough that interpolation is exact to ~1e-4."""
    platt = LogisticRegression(C=1e6).fit(votes.reshape(-1, 1), y)
    grid = np.linspace(0.0, 1.0, SIGMOID_GRID_POINTS)
    return grid, platt.predict_proba(grid.reshape(-1, 1))[:, 1]


CALIBRATORS = {"isotonic": _isotonic, "sigmoid": _sigmoid}
SIGMOID_GRID_POINTS = 1001


def fit_calibration(
    votes: np.ndarray, y: np.ndarray, equipment: pd.Series, settings: Settings
) -> Calibration:
    """Map out-of-fold votes to probabilities with the calibrator that predicts unseen equipment
    best (Brier score, folds by equipment), refitted on all votes.

    Isotonic regression follows any monotone shape but caps a probability at the share of failing
    rows among the surest votes: with a handful of failing machines one healthy row up there holds
    a runaway failure below CRITICAL. Platt's sigmoid has two parameters and no such step; it
    tends to win when failures are few, isotonic when there are enough to shape the curve.
    """
    folds = min(settings.ml.calibration_folds, int(equipment[y].nunique()))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.ml.seed)
    squared, checked = dict.fromkeys(CALIBRATORS, 0.0), 0
    for fit_rows, check_rows in cv.split(votes.reshape(-1, 1), y, groups=equipment):
        if y[fit_rows].all() or not y[fit_rows].any():
            continue  # a fold without both outcomes calibrates nothing
        checked += len(check_rows)
        for method, calibrator in CALIBRATORS.items():
            x, p = calibrator(votes[fit_rows], y[fit_rows])
            error = np.interp(votes[check_rows], x, p) - y[check_rows]
            squared[method] += float(error @ error)
    cv_brier = {method: total / max(checked, 1) for method, total in squared.items()}
    method = min(cv_brier, key=cv_brier.__getitem__)
    log.info(
        "calibration: %s (cross-validated Brier %s)",
        method,
        ", ".join(f"{name} {value:.5f}" for name, value in cv_brier.items()),
    )
    x, p = CALIBRATORS[method](votes, y)
    return Calibration(method, x, p, cv_brier)


@dataclass
class TrainResult:
    version: str
    run_id: str
    metrics: dict[str, float]
    windows: dict[str, Any]
    model: FailureModel


def _versions(catalog: Catalog) -> dict[str, str]:
    dbt_project = PROJECT_ROOT / "dbt_project" / "dbt_project.yml"
    tags = {"catalog_version": str(catalog.version), "catalog_checksum": catalog.checksum}
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        tags["dbt_core_version"] = importlib.metadata.version("dbt-core")
    if dbt_project.exists():
        import yaml

        spec = yaml.safe_load(dbt_project.read_text()) or {}
        tags["dbt_project_version"] = str(spec.get("version", "unknown"))
    return tags


def _log_plots(
    model: FailureModel,
    held: HeldOut,
    predictions: Predictions,
    failures: pd.DataFrame,
    settings: Settings,
    catalog: Catalog,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import PrecisionRecallDisplay

    rows = held.rows
    counted = held.counted
    y = rows.loc[counted, LABEL].to_numpy(dtype=bool)
    p = predictions.probability[counted]
    unit = life_unit(catalog)
    if y.any() and not y.all():
        fig, ax = plt.subplots(figsize=(5, 4))
        PrecisionRecallDisplay.from_predictions(y, p, ax=ax)
        ax.set_title("Held-out precision-recall (per row)")
        mlflow.log_figure(fig, "plots/pr_curve.png")
        fig, ax = plt.subplots(figsize=(5, 4))
        CalibrationDisplay.from_predictions(y, p, n_bins=10, strategy="quantile", ax=ax)
        ax.set_title("Held-out calibration")
        mlflow.log_figure(fig, "plots/calibration_curve.png")
    importance = pd.Series(model.classifier.feature_importances_, index=model.feature_names)
    top = importance.sort_values().tail(20)
    fig, ax = plt.subplots(figsize=(7, 6))
    labels = model.feature_labels or {}  # per feature: [what a technician reads, sensor]
    ax.barh([(labels.get(n) or [n])[0] or n for n in top.index], top.to_numpy())
    ax.set_title("Feature importance (top 20)")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importance.png")
    leads = lead_times(rows, predictions.probability, failures, settings, held.start, catalog)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(leads, bins=30)
    ax.axvline(settings.alerting.inspection_within_days, color="k", linestyle="--")
    ax.set_xlabel(f"{unit}s between the first alert and the failure (0 = missed)")
    ax.set_title(f"Lead time on held-out failures (look-back {LOOKBACK_HORIZONS} H)")
    mlflow.log_figure(fig, "plots/lead_time_histogram.png")
    truth, censored = remaining_life_truth(rows[counted], catalog)
    shown = predictions.remaining_life[counted]
    cap = predictions.cap[counted]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(np.minimum(truth, cap)[~censored], shown[~censored], s=2, alpha=0.3)
    ax.plot([0, cap.max()], [0, cap.max()], color="k", linewidth=0.8)
    ax.set_xlabel(f"true remaining life ({unit}s, capped)")
    ax.set_ylabel(f"estimated remaining life ({unit}s)")
    ax.set_title("Remaining life on held-out rows")
    mlflow.log_figure(fig, "plots/remaining_life.png")
    plt.close("all")


def _trusted_types(model: FailureModel) -> list[str]:
    """Types skops must trust to load the model: only those the loader trusts
    (emps.ml.registry.TRUSTED_TYPES), so nothing is registered that scoring would refuse."""
    import skops.io

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = [t for t in untrusted if t not in registry.TRUSTED_TYPES]
    if unexpected:
        raise TypeError(
            f"the model holds types the scorer does not load: {unexpected}; add them to "
            "emps.ml.registry.TRUSTED_TYPES if they are safe to read"
        )
    return untrusted


def cross_validate(
    examples: pd.DataFrame,
    failures: pd.DataFrame | None,
    settings: Settings,
    catalog: Catalog | None = None,
    on_step: OnStep = _quiet,
) -> tuple[HeldOut, Predictions]:
    """Grouped k-fold over all units of a run-to-failure history (EMPS_ML_CV_FOLDS): each
    unit's rows predicted by a model fitted without it; the held-out rows and predictions of
    every fold together."""
    catalog = catalog or load_catalog(settings.catalog_path)
    folds = kfold_splits(examples, settings.ml.cv_folds, settings)
    rows, parts = [], []
    for k, (train, held) in enumerate(folds, 1):
        on_step(f"cross-validation: fold {k} of {len(folds)}, {held.equipment} units held out")
        model = fit_model(train, settings, catalog)
        rows.append(held.rows)
        parts.append(predict_rows(model, held.rows))
    return HeldOut(pd.concat(rows)), Predictions(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in Predictions.__annotations__)
    )


BACKTEST_TAG = "backtest."
CHALLENGER_KEY, CHAMPION_KEY, CHAMPION_ERROR = "challenger", "champion", "champion_error"


def _champion_tag(backtests: dict[str, Any]) -> list[tuple[str, Backtest]]:
    if CHAMPION_KEY in backtests:
        return [(f"{BACKTEST_TAG}champion.", backtests[CHAMPION_KEY])]
    return []


def backtest_with_champion(
    model: FailureModel,
    examples: pd.DataFrame,
    failures: pd.DataFrame,
    settings: Settings,
    catalog: Catalog | None = None,
) -> dict[str, Any]:
    """The new model's backtest over the last EMPS_ML_BACKTEST_WEEKS of `examples` (already in
    memory: nothing more is read; training passes the machines it left out), and the
    champion's over the same rows and bands: {"challenger": Backtest, "champion": Backtest}
    ("champion_error" says why the champion has none, when one exists but cannot score these
    features)."""

    start, end = window_before(examples["ts"].max(), settings.ml.backtest_weeks)
    start = max(start, examples["ts"].min())
    result: dict[str, Any] = {}
    scored = score_history(model, "new", start, end, settings, examples, failures)
    result[CHALLENGER_KEY] = replay(scored, settings, catalog=catalog)
    version = registry.alias_version(registry.CHAMPION, settings)
    if version is None:
        return result
    try:
        champion = load_model(version, settings)
        scored = score_history(champion, version, start, end, settings, examples, failures)
    except Exception as error:  # a champion of older features, or files that do not verify
        log.warning("champion v%s has no backtest: %s", version, error)
        result[CHAMPION_ERROR] = f"{type(error).__name__}: {error}"[:4000]
        return result
    result[CHAMPION_KEY] = replay(scored, settings, catalog=catalog)
    return result


def _version_tags(metrics: dict[str, float], backtests: dict[str, Any]) -> dict[str, str]:
    """A new version's tags: its held-out figures, its backtest and the champion's beside it
    (the version's own number is tagged once it has one)."""
    tags = {f"metric.{key}": str(value) for key, value in metrics.items() if np.isfinite(value)}
    for prefix, backtest in ((BACKTEST_TAG, backtests[CHALLENGER_KEY]), *_champion_tag(backtests)):
        tags.update(tags_for(backtest, prefix))
    tags.pop(f"{BACKTEST_TAG}model_version")
    if CHAMPION_ERROR in backtests:
        tags[f"{BACKTEST_TAG}champion.error"] = backtests[CHAMPION_ERROR]
    return tags


def train_and_register(
    settings: Settings | None = None,
    examples: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
    on_step: OnStep = _quiet,
) -> TrainResult:
    """Train on the dbt training examples, evaluate on equipment it never saw, log to MLflow,
    register as challenger (on_step hears each of its training_steps as it starts).

    The figures logged are the report slice's (a continuous history), or a grouped k-fold's
    over all units (a run-to-failure history): never the gate slice's."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    settings = with_admin_thresholds(settings)
    catalog = load_catalog(settings.catalog_path)
    examples = read_training_examples(settings) if examples is None else examples
    failures = read_failure_events(settings) if failures is None else failures
    split = split_examples(examples, settings)
    fleet = int(examples["equipment_id"].nunique())
    model = fit_model(split.train, settings, catalog, on_step)
    if split.kind == RUN_TO_FAILURE:
        held, predictions = cross_validate(examples, failures, settings, catalog, on_step)
        where = f"{len(held.rows):,} rows of all units, each held out once"
    else:
        held = split.report
        predictions = predict_rows(model, held.rows)
        where = f"{len(held.period):,} rows of held-out equipment in a later period"
    on_step(f"evaluating on {where}")
    metrics = evaluate_predictions(held, predictions, failures, settings, catalog, fleet)
    # A fleet pack's test units, cut before failing: scored against their true remaining life.
    metrics |= figures_on_test_units(model, read_test_units(settings), catalog)

    weeks = settings.ml.backtest_weeks
    # On the machines training left out: over its own training rows the new model would look
    # better next to the champion than it will do on the fleet.
    unseen = examples[~examples["equipment_id"].isin(split.train["equipment_id"])]
    on_step(
        f"backtest over the last {weeks} weeks of the {unseen['equipment_id'].nunique()} "
        "machines training left out, next to the champion's"
    )
    backtests = backtest_with_champion(model, unseen, failures, settings, catalog)

    on_step("logging metrics, plots and the model to MLflow")
    experiment_id = registry.ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="retrain-failure-model") as run:
        mlflow.log_params(
            {
                "n_estimators": settings.ml.n_estimators,
                "min_samples_leaf": settings.ml.min_samples_leaf,
                "max_samples": settings.ml.max_samples,
                "horizon_days": horizon_days(settings),
                "sample_minutes": examples.attrs.get("sample_minutes", settings.ml.sample_minutes),
                "calibration": f"{model.calibration_method} on "
                f"{settings.ml.calibration_folds}-fold out-of-fold votes, folds by equipment",
                "split": split.kind,
                "evaluation": SPLIT_NAMES[split.kind]
                + (f" ({settings.ml.cv_folds} folds)" if split.kind == RUN_TO_FAILURE else ""),
                "alert_band": settings.thresholds.severity_high,
                "inspection_within": settings.alerting.inspection_within_days,
                "lookback_horizons": LOOKBACK_HORIZONS,
                "life_unit": life_unit(catalog),
                "rul_cap": ", ".join(f"{t} {c['cap']:g}" for t, c in (model.clocks or {}).items()),
                "n_features": len(model.trained_features),
                "test_equipment_fraction": settings.ml.test_equipment_fraction,
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags({f"window.{k}": str(v) for k, v in split.windows.items()})
        mlflow.set_tags(_versions(catalog))
        mlflow.log_dict({"features": model.feature_names}, "features.json")
        mlflow.log_dict(
            {
                name: sorted(part["equipment_id"].unique().tolist())
                for name, part in (
                    ("train", split.train),
                    ("gate", split.gate.rows),
                    ("report", split.report.rows),
                )
            },
            "equipment_slices.json",
        )
        _log_plots(model, held, predictions, failures, settings, catalog)
        example = split.train[model.feature_names].head(5)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=[
                f"scikit-learn=={importlib.metadata.version('scikit-learn')}",
                f"skops=={importlib.metadata.version('skops')}",
                "numpy",
                "pandas",
            ],
            serialization_format="skops",
            skops_trusted_types=_trusted_types(model),
        )
        # Registered with its figures as tags in one call (a call per tag: ~70 commits, 2 s).
        registered = mlflow.register_model(
            info.model_uri, settings.ml.model_name, tags=_version_tags(metrics, backtests)
        )
        version = str(registered.version)
    # What was logged, hashed now: every later load of this version checks its files against it.
    registry.record_registration(
        version, registry.version_digest(version, settings), "training", settings
    )
    mlflow_client = registry.client(settings)
    backtests[CHALLENGER_KEY].model_version = version
    mlflow_client.set_model_version_tag(
        settings.ml.model_name, version, f"{BACKTEST_TAG}model_version", version
    )
    mlflow_client.log_dict(
        run.info.run_id,
        {k: b.as_dict() for k, b in backtests.items() if k != CHAMPION_ERROR},
        "backtest.json",
    )
    registry.set_challenger(version, settings)
    return TrainResult(version, run.info.run_id, metrics, split.windows, model)


def retrain(
    actor: str = "retrain-failure-model",
    settings: Settings | None = None,
    on_step: OnStep = _quiet,
    promote: bool = True,
):
    """Train a challenger, then (with `promote`) let the gate decide whether it becomes champion:
    (result, decision or None). on_step hears training_steps + 2 steps (reading, gate)."""
    settings = with_admin_thresholds(settings)
    on_step("reading training examples from the dbt marts")
    examples = read_training_examples(settings)
    step = examples.attrs.get("sample_minutes", settings.ml.sample_minutes)
    on_step(
        f"{len(examples):,} training examples, one per equipment per {step} minutes"
        + (
            f" (widened from {settings.ml.sample_minutes} to stay near "
            f"EMPS_ML_MAX_TRAINING_ROWS={settings.ml.max_training_rows:,})"
            if step > settings.ml.sample_minutes
            else ""
        )
    )
    failures = read_failure_events(settings)
    result = train_and_register(settings, examples, failures, on_step)
    if not promote:
        return result, None
    on_step("promotion gate: challenger against champion on the gate slice")
    decision = registry.run_gate(result.version, actor, settings, examples, failures)
    return result, decision
