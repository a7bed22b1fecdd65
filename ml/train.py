"""Training: fit the forest, calibrate it on out-of-fold votes, evaluate on held-out equipment
and time, log everything to MLflow and register the version as `challenger`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
from collections.abc import Callable
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
from emps.settings import PROJECT_ROOT, Settings, get_settings
from ml.dataset import (
    DAYS_LABEL,
    LABEL,
    feature_columns,
    feature_label,
    horizon,
    horizon_days,
    read_failure_events,
    read_training_examples,
    with_admin_thresholds,
)
from ml.evaluate import (
    NotEnoughData,
    Split,
    _lead_days,
    choose_threshold,
    evaluate_model,
    split_examples,
)
from ml.model import FailureModel

log = logging.getLogger(__name__)
# The regressor learns from rows within this many horizons of a failure. Its days are shown only
# when failure is plausible (MEDIUM and up: within about the horizon); rows from before a
# degradation shows, weeks out, carry no sign of how far the failure is and pulled its days up
# (held-out MAE within 14 days of failure, 200 equipment x 120 days: 2.7 days at 30, 1.6 at 14).
REGRESSOR_HORIZONS = 2

# Told the description of each step of a training run as it starts (a progress bar, a flow's log).
OnStep = Callable[[str], None]


def _quiet(description: str) -> None:
    """No progress to show."""


def training_steps(settings: Settings) -> int:
    """How many steps train_and_register reports: one forest per calibration fold, the forest,
    the days regressor, calibration, evaluation and MLflow (fewer folds when few machines failed)."""
    return settings.ml_calibration_folds + 5


def fit_model(
    split: Split,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    on_step: OnStep = _quiet,
):
    """Fit classifier and regressor on the train slice; calibrate and pick the threshold on votes
    the forest cast on equipment it was not fitted on."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    features = feature_columns(list(split.train.columns), catalog)
    model = FailureModel(
        feature_names=features,
        feature_labels={name: list(feature_label(name, catalog)) for name in features},
        horizon_days=horizon_days(settings),
        regressor_max_days=REGRESSOR_HORIZONS * horizon_days(settings),
    )
    X = model.matrix(split.train)
    y = split.train[LABEL].to_numpy(dtype=bool)
    forest = RandomForestClassifier(
        n_estimators=settings.ml_n_estimators,
        min_samples_leaf=settings.ml_min_samples_leaf,
        max_features="sqrt",
        max_samples=settings.ml_max_samples if settings.ml_max_samples < 1 else None,
        n_jobs=settings.ml_n_jobs,
        random_state=settings.ml_seed,
    )
    votes = out_of_fold_votes(forest, X, y, split.train["equipment_id"], settings, on_step)
    on_step(f"fitting {settings.ml_n_estimators} trees on {len(y):,} training rows")
    model.classifier = clone(forest).fit(X, y)
    # Days until failure is only learnable close to a failure; far from one the regressor would
    # learn noise, and the scorer only reports it when failure is likely anyway.
    days = split.train[DAYS_LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    near = ~np.isnan(days) & (days <= model.regressor_max_days)
    on_step(f"fitting the days-until-failure regressor on {int(near.sum()):,} rows")
    if near.sum() >= 10:
        model.regressor = RandomForestRegressor(
            n_estimators=max(10, settings.ml_n_estimators // 2),
            min_samples_leaf=settings.ml_min_samples_leaf,
            max_features=0.5,
            n_jobs=settings.ml_n_jobs,
            random_state=settings.ml_seed,
        ).fit(X[near], days[near])
    on_step("calibrating probabilities and choosing the operating threshold")
    calibration = fit_calibration(votes, y, split.train["equipment_id"], settings)
    model.calibration_method = calibration.method
    model.calibration_x, model.calibration_y = calibration.x, calibration.y
    model.threshold = choose_threshold(model.calibrate(votes), y, settings)
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
    folds = min(settings.ml_calibration_folds, failing)
    if folds < 2:
        raise NotEnoughData(
            f"{failing} training equipment failed in the training period; calibrating needs at "
            "least two: backfill more equipment or a longer history"
        )
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.ml_seed)
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
    folds = min(settings.ml_calibration_folds, int(equipment[y].nunique()))
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=settings.ml_seed)
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


def _log_plots(model: FailureModel, split: Split, failures, settings: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    from sklearn.calibration import CalibrationDisplay
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay

    X = model.matrix(split.test)
    y = split.test[LABEL].to_numpy(dtype=bool)
    p = model.failure_probability(X)

    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_predictions(y, p >= model.threshold, ax=ax, colorbar=False)
    ax.set_title(f"Held-out confusion matrix (threshold {model.threshold:.2f})")
    mlflow.log_figure(fig, "plots/confusion_matrix.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    PrecisionRecallDisplay.from_predictions(y, p, ax=ax)
    ax.set_title("Held-out precision-recall")
    mlflow.log_figure(fig, "plots/pr_curve.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    CalibrationDisplay.from_predictions(y, p, n_bins=10, strategy="quantile", ax=ax)
    ax.set_title("Held-out calibration")
    mlflow.log_figure(fig, "plots/calibration_curve.png")
    importance = pd.Series(model.classifier.feature_importances_, index=model.feature_names)
    top = importance.sort_values().tail(20)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([model.feature_labels[n][0] for n in top.index], top.to_numpy())
    ax.set_title("Feature importance (top 20)")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/feature_importance.png")
    leads, _ = _lead_days(
        split.test,
        p >= settings.severity_high,
        failures,
        horizon(settings),
    )
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.hist(leads, bins=np.arange(0, horizon_days(settings) + 1, 0.5))
    ax.set_xlabel("days between first HIGH/CRITICAL prediction and failure (0 = missed)")
    ax.set_title("Lead time on held-out failures")
    mlflow.log_figure(fig, "plots/lead_time_histogram.png")
    plt.close("all")


def _trusted_types(model: FailureModel) -> list[str]:
    """Types skops must trust to load the model: only those the loader trusts
    (ml.registry.TRUSTED_TYPES), so nothing is registered that scoring would refuse."""
    import skops.io

    from ml.registry import TRUSTED_TYPES

    untrusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    unexpected = [t for t in untrusted if t not in TRUSTED_TYPES]
    if unexpected:
        raise TypeError(
            f"the model holds types the scorer does not load: {unexpected}; add them to "
            "ml.registry.TRUSTED_TYPES if they are safe to read"
        )
    return untrusted


def train_and_register(
    settings: Settings | None = None,
    examples: pd.DataFrame | None = None,
    failures: pd.DataFrame | None = None,
    on_step: OnStep = _quiet,
) -> TrainResult:
    """Train on the dbt training examples, evaluate honestly, log to MLflow, register as challenger
    (on_step hears each of its training_steps as it starts)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from ml import registry

    settings = with_admin_thresholds(settings)
    catalog = load_catalog(settings.catalog_path)
    examples = read_training_examples(settings) if examples is None else examples
    failures = read_failure_events(settings) if failures is None else failures
    split = split_examples(examples, settings)
    model = fit_model(split, settings, catalog, on_step)
    on_step(f"evaluating on {len(split.test):,} rows of held-out equipment and time")
    metrics = evaluate_model(model, split.test, failures, settings)

    on_step("logging metrics, plots and the model to MLflow")
    experiment_id = registry.ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name="retrain-failure-model") as run:
        mlflow.log_params(
            {
                "n_estimators": settings.ml_n_estimators,
                "min_samples_leaf": settings.ml_min_samples_leaf,
                "max_samples": settings.ml_max_samples,
                "horizon_days": horizon_days(settings),
                "sample_minutes": settings.ml_sample_minutes,
                "threshold_policy": settings.ml_threshold_policy,
                "calibration": f"{model.calibration_method} on "
                f"{settings.ml_calibration_folds}-fold out-of-fold votes, folds by equipment",
                "threshold": round(model.threshold, 6),
                "n_features": len(model.feature_names),
                "test_equipment_fraction": settings.ml_test_equipment_fraction,
            }
        )
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags({f"window.{k}": str(v) for k, v in split.windows.items()})
        mlflow.set_tags(_versions(catalog))
        mlflow.log_dict({"features": model.feature_names}, "features.json")
        _log_plots(model, split, failures, settings)
        example = split.test[model.feature_names].head(5)
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
            registered_model_name=settings.model_name,
        )
        version = str(info.registered_model_version)
    # What was logged, hashed now: every later load of this version checks its files against it.
    registry.record_registration(
        version, registry.version_digest(version, settings), "training", settings
    )
    mlflow_client = registry.client(settings)
    for key, value in metrics.items():
        if np.isfinite(value):
            mlflow_client.set_model_version_tag(
                settings.model_name, version, f"metric.{key}", str(value)
            )
    mlflow_client.set_model_version_tag(settings.model_name, version, "threshold", model.threshold)
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
    from ml import registry

    settings = with_admin_thresholds(settings)
    on_step("reading training examples from the dbt marts")
    examples = read_training_examples(settings)
    failures = read_failure_events(settings)
    result = train_and_register(settings, examples, failures, on_step)
    if not promote:
        return result, None
    on_step("promotion gate: challenger against champion on the same held-out rows")
    decision = registry.run_gate(result.version, actor, settings, examples, failures)
    return result, decision
