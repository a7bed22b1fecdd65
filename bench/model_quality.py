"""Model quality on simulated history, split by what only the simulator knows: which failures gave
warning (days of degradation) and which were sudden (hours of weak drift, or none).

    uv run python bench/model_quality.py [--equipment 100] [--days 90] [--trees 60] [--folds 3]
                                         [--threshold-policy min_precision]

A fresh temporary database gets `--days` of the seeded fleet's history (as `emps up` backfills
it), dbt builds the features and training examples, and the model is fitted and evaluated as
`emps model train` does (held-out equipment, a later period, an H-day gap), once per fold: each
fold holds out another slice of equipment (--folds x 30 % of the fleet, disjoint) and the held-out
predictions of all folds are pooled, so the figures rest on several times the failures a single
training run is judged on. Then the simulator's ground truth (sim.equipment_truth, which the model
never reads) tells which held-out failures warned, and the issue's figures are reported over all
held-out failures and over the warned ones: no sensor model can foresee a failure its sensors
never showed, so recall and days-until-failure error over all failures are capped by the share
of sudden ones in the held-out period.

Last line: {"bench": "model_quality", "equipment": N, "days": D, "folds": F, "threshold_policy": ...,
"threshold": ..., "heldout_failures": ..., "heldout_sudden": ..., "failures_detected": ...,
"failures_evaluated": ..., "recall": ..., "recall_ci95": [low, high], "recall_ceiling": ...,
"recall_warned": ..., "precision": ..., "fpr": ..., "median_lead_days": ..., "rul_mae_days": ...,
"rul_mae_warned_days": ..., "rul_mae_regressor_days": ..., "brier": ..., "accuracy": ...,
"pr_auc": ..., "recall_at_precision_80": ..., "recall_at_precision_80_ci95": [low, high],
"recall_at_precision_80_warned": ..., "rul_mae_days_ci95": [low, high],
"full_context_failures": ..., "full_context_recall": ..., "full_context_precision": ...,
"full_context_recall_at_precision_80": ..., "full_context_recall_ceiling": ...,
"full_context_recall_warned": ..., "fit_s": ... (per fold)}.
Recall and precision are per row (equipment-hour) at the model's operating threshold, which
--threshold-policy picks from the training equipment's out-of-fold votes, as training does
(EMPS_ML_THRESHOLD_POLICY: by default min_precision, the lowest threshold reaching precision 0.80
on those votes; severity_high, the HIGH band alerting fires on); threshold is the folds' median.
recall_at_precision_80 is the best recall any threshold reaches at precision >= 0.80 on the held-out rows themselves, and
_warned the share of the warned failures' rows that threshold catches; _ci95 are 95 % intervals
from resampling the held-out equipment (a few failures carry most of the positive rows);
failures_detected counts the held-out failures with a HIGH or CRITICAL prediction in the H days
before them. full_context_* are the same figures over the failures whose whole 2 H run-up lies
in the held-out period (see full_context): at the period's edges a failure's hits and the false
alarms of its degraded days before its H fall on different sides, which moves precision.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from _tempdb import temporary_platform
from rich.console import Console
from rich.table import Table


def sudden_flags(test: pd.DataFrame, settings) -> pd.Series:
    """Per test row: True when its next failure was sudden, False when it warned, NaN if none."""
    from emps.db import Role, connect

    with connect(Role.INGEST, settings) as conn:
        truth = conn.execute("select equipment_id, failure_at, sudden from sim.equipment_truth")
        sudden = {(e, pd.Timestamp(f)): s for e, f, s in truth.fetchall()}
    keys = zip(test["equipment_id"], test["next_failure_at"], strict=True)
    return pd.Series(
        [np.nan if pd.isna(f) else float(sudden[(e, pd.Timestamp(f))]) for e, f in keys],
        index=test.index,
    )


def full_context(test: pd.DataFrame, horizon: pd.Timedelta) -> np.ndarray:
    """The held-out rows whose failure's whole run-up lies in the held-out period.

    The false alarms sit mostly in the H days before a failure's own H (degraded, not yet due).
    A failure early in the period has that stretch before the period starts, so its hits count
    and its false alarms do not; rows in the period's last H days may precede a failure after
    the data ends, so their false alarms count and its hits do not. Dropping both (the rows of
    failures within 2 H of the start, the rows within H of the last labelled one) leaves
    failures with their whole 2 H run-up, as in the steady state of a fleet.
    """
    start, last = test["ts"].min(), test["ts"].max()
    failure = test["next_failure_at"]
    early = failure.notna() & (failure < start + 2 * horizon)
    late = test["ts"] > last - horizon
    return (~(early | late)).to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equipment", type=int, default=100)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--trees", type=int, default=60)
    parser.add_argument("--folds", type=int, default=3, help="Held-out equipment slices pooled")
    parser.add_argument(
        "--threshold-policy",
        choices=["severity_high", "max_f1", "min_precision"],
        default="min_precision",
        help="How each fold's operating threshold is chosen (EMPS_ML_THRESHOLD_POLICY)",
    )
    args = parser.parse_args()
    console = Console()
    env = {
        "EMPS_SIM_EQUIPMENT": str(args.equipment),
        "EMPS_SIM_HISTORY_DAYS": str(args.days),
        "EMPS_ML_N_ESTIMATORS": str(args.trees),
        "EMPS_ML_THRESHOLD_POLICY": args.threshold_policy,
    }
    with temporary_platform("model_quality", env) as platform:
        from emps.bootstrap import backfill_history, build_features
        from ml.dataset import (
            DAYS_LABEL,
            LABEL,
            horizon,
            read_failure_events,
            read_training_examples,
        )
        from ml.evaluate import best_recall, evaluate_predictions, predict_rows, split_examples
        from ml.train import fit_model

        settings = platform.settings
        if args.folds * settings.ml_test_equipment_fraction > 1:
            parser.error("--folds x EMPS_ML_TEST_EQUIPMENT_FRACTION must not exceed 1")
        backfill_history(settings)
        build_features(settings)
        examples = read_training_examples(settings)
        failures = read_failure_events(settings)
        tests, probabilities, days, thresholds, regressor_days = [], [], [], [], []
        began = time.perf_counter()
        for fold in range(args.folds):
            split = split_examples(examples, settings, fold=fold, pooled=True)
            with console.status(f"  fold {fold + 1}/{args.folds}: fitting {args.trees} trees"):
                model = fit_model(split, settings)
            probability, predicted_days = predict_rows(model, split.test)
            # The regressor's own days, to show what the probability cap changes.
            near = ~np.isnan(predicted_days)
            regressor = np.full(len(predicted_days), np.nan)
            if near.any():
                regressor[near] = model.days_until_failure(model.matrix(split.test)[near])
            regressor_days.append(regressor)
            tests.append(split.test)
            probabilities.append(probability)
            days.append(predicted_days)
            thresholds.append(np.full(len(probability), model.threshold))
            console.print(
                f"  fold {fold + 1}: {split.windows['test_equipment']} held-out equipment, "
                f"calibration {model.calibration_method}"
            )
        fit_s = (time.perf_counter() - began) / args.folds
        test = pd.concat(tests, ignore_index=True)
        probability = np.concatenate(probabilities)
        predicted_days = np.concatenate(days)
        regressor = np.concatenate(regressor_days)
        row_threshold = np.concatenate(thresholds)
        metrics = evaluate_predictions(
            test, probability, predicted_days, row_threshold, failures, settings
        )
        sudden = sudden_flags(test, settings)

    positive = test[LABEL].to_numpy(dtype=bool)
    warned = positive & (sudden == 0).to_numpy()
    heldout = (
        test.loc[positive, ["equipment_id", "next_failure_at"]]
        .assign(sudden=sudden[positive])
        .drop_duplicates(["equipment_id", "next_failure_at"])
    )
    error = np.abs(predicted_days - test[DAYS_LABEL].to_numpy(dtype=np.float64, na_value=np.nan))
    truth = test[DAYS_LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    scored = ~np.isnan(error)
    scored_warned = scored & (sudden == 0).to_numpy()
    best_threshold, _ = best_recall(positive, probability, settings.ml_target_precision)
    alert = probability >= row_threshold
    steady = full_context(test, horizon(settings))
    steady_alert = alert[steady]
    steady_positive = positive[steady]
    _, steady_best = best_recall(steady_positive, probability[steady], settings.ml_target_precision)

    def interval(key: str) -> list[float]:
        return [round(metrics[f"{key}_ci95_low"], 3), round(metrics[f"{key}_ci95_high"], 3)]

    figures = {
        "bench": "model_quality",
        "equipment": args.equipment,
        "days": args.days,
        "folds": args.folds,
        "threshold_policy": args.threshold_policy,
        "threshold": round(metrics["threshold"], 4),
        "heldout_failures": len(heldout),
        "heldout_sudden": int(heldout["sudden"].sum()),
        "failures_detected": int(metrics["failures_detected"]),
        "failures_evaluated": int(metrics["failures_evaluated"]),
        "recall": round(metrics["recall"], 4),
        "recall_ci95": interval("recall"),
        "recall_ceiling": round(float(warned.sum() / max(positive.sum(), 1)), 4),
        "recall_warned": round(float(alert[warned].mean()), 4) if warned.any() else None,
        "precision": round(metrics["precision"], 4),
        "fpr": round(metrics["fpr"], 4),
        "median_lead_days": round(metrics["median_lead_days"], 2),
        "rul_mae_days": round(metrics["rul_mae_days"], 2) if scored.any() else None,
        "rul_mae_warned_days": round(float(error[scored_warned].mean()), 2)
        if scored_warned.any()
        else None,
        "rul_mae_regressor_days": round(float(np.nanmean(np.abs(regressor - truth))), 2)
        if scored.any()
        else None,
        "brier": round(metrics["brier"], 4),
        "accuracy": round(metrics["accuracy"], 4),
        "pr_auc": round(metrics["pr_auc"], 4),
        "recall_at_precision_80": round(metrics["recall_at_target_precision"], 4),
        "recall_at_precision_80_ci95": interval("recall_at_target_precision"),
        "recall_at_precision_80_warned": round(
            float((probability[warned] >= best_threshold).mean()), 4
        )
        if warned.any() and best_threshold is not None
        else None,
        "rul_mae_days_ci95": interval("rul_mae_days"),
        "full_context_failures": int(
            test.loc[steady & positive, ["equipment_id", "next_failure_at"]]
            .drop_duplicates()
            .shape[0]
        ),
        "full_context_recall": round(float(steady_alert[steady_positive].mean()), 4)
        if steady_positive.any()
        else None,
        "full_context_precision": round(float(steady_positive[steady_alert].mean()), 4)
        if steady_alert.any()
        else None,
        "full_context_recall_at_precision_80": round(steady_best, 4)
        if steady_positive.any()
        else None,
        "full_context_recall_ceiling": round(
            float(warned[steady].sum() / max(steady_positive.sum(), 1)), 4
        ),
        "full_context_recall_warned": round(float(alert[steady & warned].mean()), 4)
        if (steady & warned).any()
        else None,
        "fit_s": round(fit_s, 1),
    }
    table = Table(title=f"held-out quality, {args.equipment} equipment x {args.days} days")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        if key != "bench":
            table.add_row(key, "—" if value is None else str(value))
    console.print(table)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
