"""The model itself: feature naming, the honest split, leakage, explanations, metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emps.catalog import load_catalog
from emps.ml import synthetic
from emps.ml.dataset import (
    LABEL,
    FeaturesMissing,
    feature_columns,
    feature_label,
    horizon,
    read_training_examples,
)
from emps.ml.evaluate import (
    HEADLINE_KEYS,
    NotEnoughData,
    evaluate_model,
    headline,
    predict_rows,
    split_examples,
)
from emps.ml.explain import contributions, explain_rows, score_and_explain
from emps.ml.train import fit_calibration, fit_model
from tests.ml.conftest import TEST_RELATION


@pytest.fixture
def fast(settings):
    return settings.replace(ml={"n_estimators": 20, "n_jobs": 1, "min_samples_leaf": 20})


def test_features_are_named_for_a_technician(settings, extra_sensor_catalog):
    """A technician reads "vibration trend over 24 h", never a column index, and new sensors
    are features."""
    catalog = load_catalog(extra_sensor_catalog)
    assert feature_label("vibration_slope_w3", catalog) == (
        "vibration trend over 24 h",
        "vibration",
    )
    assert feature_label("vibration_drift_lag", catalog) == (
        "vibration drift from its baseline over 24 h",
        "vibration",
    )
    assert feature_label("temperature_site_drift_lag", catalog) == (
        "temperature drift against the machines at its site",
        "temperature",
    )
    assert feature_label("oil_quality_mean_w1", catalog) == (
        "oil quality mean over 1 h",
        "oil_quality",
    )
    assert feature_label("missing_rate", catalog) == ("share of missing readings over 24 h", None)


def test_the_feature_list_is_explicit(settings, extra_sensor_catalog, tmp_path):
    """The model reads the catalog's feature list and nothing else: a column named like a
    sensor's (or a label) is not a feature, and a missing feature is an error, not a zero."""
    catalog = load_catalog(extra_sensor_catalog)
    names = catalog.feature_names()
    assert "oil_quality_slope_w2" in names and "oil_quality" not in names
    columns = ["equipment_id", "ts", "oil_quality", "oil_quality_max", LABEL, *names]
    assert feature_columns(columns, catalog) == names
    with pytest.raises(FeaturesMissing, match="oil_quality_now"):
        feature_columns([c for c in columns if c != "oil_quality_now"], catalog)


def test_split_holds_out_equipment_and_time_with_gaps(settings, synthetic_examples):
    """Held-out equipment never appears in training, the period that counts starts H days after
    training ends, and the gate and report slices are different equipment."""
    split = split_examples(synthetic_examples[0], settings)
    gap = horizon(settings)
    test_ids = set(split.held_out.rows["equipment_id"])
    assert test_ids and not test_ids & set(split.train["equipment_id"])
    assert split.train["ts"].max() + gap <= split.report.period["ts"].min()
    assert not set(split.gate.rows["equipment_id"]) & set(split.report.rows["equipment_id"])


def test_folds_hold_out_disjoint_equipment_and_fold_zero_is_the_default(
    settings, synthetic_examples
):
    """bench/model_quality pools folds: each holds out other equipment, never in its own training."""
    examples = synthetic_examples[0]
    default = split_examples(examples, settings)
    held_out = []
    for fold in range(3):
        split = split_examples(examples, settings, fold=fold)
        ids = set(split.held_out.rows["equipment_id"])
        assert ids and not ids & set(split.train["equipment_id"])
        held_out.append(ids)
    assert held_out[0] == set(default.held_out.rows["equipment_id"])
    assert not (held_out[0] & held_out[1]) and not (held_out[1] & held_out[2])
    assert not held_out[0] & held_out[2]


def test_rows_whose_label_is_not_final_are_left_out(settings, synthetic_examples):
    """The last H days, whose failure may still come, are neither healthy training rows nor test rows."""
    examples = synthetic_examples[0].copy()
    open_since = examples["ts"].max() - horizon(settings)
    examples["label_is_final"] = examples["next_failure_at"].notna() | (
        examples["ts"] <= open_since
    )
    split = split_examples(examples, settings)
    for part in (split.train, split.gate.rows, split.report.rows):
        assert part["label_is_final"].all()
        assert part["ts"].max() <= open_since
    assert not examples["label_is_final"].all()


def test_too_little_history_is_explained(settings, synthetic_examples):
    """With a week of data the split refuses and says to bring a longer history."""
    examples = synthetic_examples[0]
    week = examples[examples["ts"] < examples["ts"].min() + pd.Timedelta(days=7)]
    with pytest.raises(NotEnoughData, match="longer history"):
        split_examples(week, settings)


def test_a_machine_about_to_fail_is_critical_and_a_healthy_one_low(fast, synthetic_examples):
    """Calibrated on votes for equipment the forest did not see, the probabilities use the whole
    range: held-out rows hours from failure reach CRITICAL, rows of healthy machines stay LOW."""
    examples, failures = synthetic_examples
    split = split_examples(examples, fast)
    model = fit_model(split, fast)
    test = split.held_out.period
    probability = pd.Series(model.failure_probability(model.matrix(test)), test.index)
    days = test["days_until_failure"]
    assert probability[days < 0.5].median() >= fast.thresholds.severity_critical
    assert probability[days.isna()].quantile(0.95) < fast.thresholds.severity_medium


def test_calibration_needs_two_failing_training_machines(fast, synthetic_examples):
    """With one machine failing in the training period there is nothing to cross-fit: say so."""
    examples, _ = synthetic_examples
    split = split_examples(examples, fast)
    failing = split.train.loc[split.train[LABEL], "equipment_id"].unique()
    lone = split.train[~split.train["equipment_id"].isin(failing[1:])]
    with pytest.raises(NotEnoughData, match="at least two"):
        fit_model(lone, fast)


def test_shuffled_labels_give_a_model_without_skill(fast, synthetic_examples):
    """No leakage: trained on shuffled labels the model has no held-out skill and raises no alert.

    Brier skill (over predicting the base rate) is the chance check, not ROC-AUC: a forest fitted
    to noise still ranks outlying rows a little higher (greedy splits isolate small positive-rich
    edge leaves), and failing machines are the outliers, so its AUC drifts to 0.5-0.65 by seed.
    """
    examples, failures = synthetic_examples
    real_split = split_examples(examples, fast)
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        shuffled = examples.copy()
        shuffled[LABEL] = rng.permutation(shuffled[LABEL].to_numpy())
        noise_model = fit_model(split_examples(shuffled, fast), fast)
        noise = evaluate_model(noise_model, real_split.held_out, failures, fast)
        assert abs(noise["brier_skill"]) < 0.1
        assert noise["alert_episodes"] == 0 and noise["failures_alerted"] == 0
    real = evaluate_model(fit_model(real_split, fast), real_split.held_out, failures, fast)
    assert real["brier_skill"] > 0.5
    assert real["roc_auc"] > 0.9
    assert real["failures_warned_share"] > 0.5


def test_explanations_add_up_and_name_the_drifting_sensor(fast, synthetic_examples):
    """Contributions sum to the forest score, and a failing machine's top reason is its bad sensor."""
    examples, _ = synthetic_examples
    split = split_examples(examples, fast)
    model = fit_model(split, fast)
    test = split.held_out.period
    X = model.matrix(test)
    contrib, base = contributions(model, X)
    expected = model.classifier.predict_proba(X)[:, 1]
    np.testing.assert_allclose(contrib.sum(axis=1) + base, expected, atol=1e-9)
    sensors = load_catalog(fast.catalog_path).sensor_names
    near = test[test["days_until_failure"] < 1].head(20)
    explanations = explain_rows(model, model.matrix(near), top=3)
    drivers = [sensors[int(eq.split("-")[1]) % len(sensors)] for eq in near["equipment_id"]]
    hits = sum(e[0]["sensor"] == d for e, d in zip(explanations, drivers, strict=True))
    assert hits >= 0.8 * len(near)
    assert {"feature", "label", "sensor", "contribution", "value"} <= set(explanations[0][0])


def test_metrics_report_the_issue_figures_and_no_accuracy_or_oracle(fast, synthetic_examples):
    """Evaluation reports the event-level and remaining-life figures of the headline, with the
    naive baseline next to the model's error; accuracy (which restates the base rate) and
    figures at a threshold picked on the test rows are not among them."""
    examples, failures = synthetic_examples
    split = split_examples(examples, fast)
    metrics = evaluate_model(fit_model(split, fast), split.held_out, failures, fast)
    line = headline(metrics)
    assert list(line) == list(HEADLINE_KEYS)
    assert metrics["failures_evaluated"] >= 1
    assert 0 <= metrics["brier"] < 0.05
    assert metrics["rul_mae_displayed"] < metrics["rul_mae_naive"]
    assert not {"accuracy", "recall_at_target_precision", "threshold", "recall"} & set(metrics)


def test_synthetic_frame_matches_the_feature_contract(settings):
    """The stand-in data has exactly the contract's feature columns, so tests train on that shape."""
    catalog = load_catalog(settings.catalog_path)
    examples, _ = synthetic.training_examples(catalog, equipment=2, days=20)
    assert feature_columns(list(examples.columns), catalog) == synthetic.feature_names(catalog)


def test_packed_forest_predicts_exactly_like_scikit_learn(fast, synthetic_examples):
    """The fast single-row path gives scikit-learn's numbers, missing readings included."""
    examples, _ = synthetic_examples
    gappy = examples.copy()
    columns = [c for c in gappy.columns if c.startswith(("vibration", "temperature"))]
    holes = np.random.default_rng(0).random((len(gappy), len(columns))) < 0.05
    gappy[columns] = gappy[columns].mask(holes)
    split = split_examples(gappy, fast)
    model = fit_model(split, fast)
    X = model.matrix(split.held_out.rows)[:500]
    assert np.isnan(X).any()
    np.testing.assert_allclose(
        model.forest_score(X), model.classifier.predict_proba(X)[:, 1], atol=1e-12
    )
    score, explanations = score_and_explain(model, X, top=3)
    np.testing.assert_allclose(score, model.classifier.predict_proba(X)[:, 1], atol=1e-12)
    assert len(explanations) == len(X) and all(len(e) == 3 for e in explanations)


def test_remaining_life_never_rises_with_the_probability_and_is_shown_at_every_severity(
    fast, synthetic_examples
):
    """At a given moment, among machines the vote sees failing within the horizon, a higher
    failure probability never reads as a longer remaining life, and none of them has a lower
    probability than a machine read beyond the horizon; healthy machines get an estimate too,
    and it reads "more than" the cap only at the cap; two scores of the same features read the
    same."""
    examples, _ = synthetic_examples
    split = split_examples(examples, fast)
    model = fit_model(split, fast)
    rows = split.held_out.period
    moment = rows[rows["ts"] == rows["ts"].max()]  # every machine's row at one moment
    for frame in (moment, rows):
        predictions = predict_rows(model, frame)
        horizon = model.per_type(frame["equipment_type"].to_numpy(), "horizon", len(frame))
        for etype in frame["equipment_type"].unique():
            mine = (frame["equipment_type"] == etype).to_numpy()
            near = mine & (predictions.remaining_life < horizon - 1e-9)
            order = np.argsort(predictions.probability[near], kind="stable")
            life = predictions.remaining_life[near][order]
            assert (np.diff(life) <= 1e-9).all(), etype
            if near.any() and (mine & ~near).any():
                beyond = predictions.probability[mine & ~near].max()
                assert predictions.probability[near].min() >= beyond - 1e-12, etype
    predictions = predict_rows(model, rows)
    assert not np.isnan(predictions.remaining_life).any()
    low = predictions.probability < fast.thresholds.severity_medium
    assert low.any() and (~low).any()
    score = model.forest_score(model.matrix(rows))
    life, beyond = model.remaining_life(score, rows["equipment_type"].to_numpy())
    assert (beyond == (life >= predictions.cap - 1e-9)).all() and beyond.any() and (~beyond).any()
    again = predict_rows(model, rows.copy())
    np.testing.assert_array_equal(again.remaining_life, predictions.remaining_life)
    np.testing.assert_array_equal(again.probability, predictions.probability)


@pytest.mark.parametrize("shape", ["smooth", "step"])
def test_calibration_is_chosen_by_how_well_it_predicts_unseen_equipment(settings, shape):
    """Votes whose failure rate rises smoothly get Platt's sigmoid, a rate that jumps at one vote
    gets isotonic regression; either way a probability means the failure rate it says."""
    rng = np.random.default_rng(11)
    machines, rows = 40, 400
    votes = rng.uniform(0.0, 1.0, machines * rows)
    if shape == "smooth":
        rate = 1.0 / (1.0 + np.exp(-12.0 * (votes - 0.6)))
    else:
        rate = np.where(votes > 0.7, 0.9, 0.02)
    y = rng.uniform(size=len(votes)) < rate
    equipment = pd.Series(np.repeat([f"EQ-{i:04d}" for i in range(machines)], rows))
    calibration = fit_calibration(votes, y, equipment, settings)
    assert calibration.method == ("sigmoid" if shape == "smooth" else "isotonic")
    probe = np.array([0.1, 0.3, 0.5, 0.6, 0.8, 0.95])
    expected = (
        1.0 / (1.0 + np.exp(-12.0 * (probe - 0.6)))
        if shape == "smooth"
        else np.where(probe > 0.7, 0.9, 0.02)
    )
    np.testing.assert_allclose(np.interp(probe, calibration.x, calibration.y), expected, atol=0.06)


def test_figures_come_with_intervals_over_the_held_out_equipment(fast, synthetic_examples):
    """The warned share comes with its Clopper-Pearson interval over failures and one from
    resampling the equipment, the false-alert rate and remaining-life error with intervals
    from resampling the equipment; judged on one failing machine, the resampled intervals are
    missing rather than falsely narrow."""
    examples, failures = synthetic_examples
    split = split_examples(examples, fast)
    model = fit_model(split, fast)
    held = split.held_out
    metrics = evaluate_model(model, held, failures, fast)
    failing = held.period.loc[held.period[LABEL], "equipment_id"].unique()
    assert len(failing) >= 3
    for key in ("failures_warned_share", "rul_mae_displayed", "rul_mae_naive", "median_lead"):
        low, high = metrics[f"{key}_ci95_low"], metrics[f"{key}_ci95_high"]
        assert low <= metrics[key] <= high and low < high, key
    one = type(held)(held.rows[~held.rows["equipment_id"].isin(failing[1:])], held.start)
    lone = evaluate_model(model, one, failures, fast)
    assert lone["failures_evaluated"] >= 1
    assert not np.isnan(lone["failures_warned_share_ci95_low"])  # Clopper-Pearson still holds
    assert np.isnan(lone["failures_warned_share_boot95_low"])


def test_a_long_history_is_read_at_a_wider_step_within_the_row_bound(
    ml_settings, synthetic_examples
):
    """Training reads at most about EMPS_ML_MAX_TRAINING_ROWS examples: a history too long for
    the bound is read at a wider step, every equipment evenly in time, failures keeping their
    share; one within the bound is read whole at EMPS_ML_SAMPLE_MINUTES."""
    examples, _ = synthetic_examples
    synthetic.load_examples(examples, ml_settings, TEST_RELATION)

    whole = read_training_examples(ml_settings)
    assert len(whole) == len(examples) and whole.attrs["sample_minutes"] == 60

    bound = 1_000
    thinned = read_training_examples(ml_settings.replace(ml={"max_training_rows": bound}))
    assert whole.attrs["sample_minutes"] < thinned.attrs["sample_minutes"]
    assert 0.8 * bound <= len(thinned) <= 1.05 * bound
    assert set(thinned["equipment_id"]) == set(examples["equipment_id"])
    per_equipment = thinned.groupby("equipment_id").size()
    assert per_equipment.max() - per_equipment.min() <= 2
    assert thinned[LABEL].mean() == pytest.approx(whole[LABEL].mean(), rel=0.35)
