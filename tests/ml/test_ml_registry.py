"""MLflow registry: what training logs, the promotion gate and the promotion history."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml import registry, synthetic
from emps.ml.dataset import LABEL
from emps.ml.train import train_and_register, training_steps


def promotions(settings) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select from_version, to_version, promoted_by, reason from ops.model_promotions "
            "where model_name = %s order by id",
            (settings.ml.model_name,),
        ).fetchall()


@pytest.fixture(scope="module")
def gate_examples(settings):
    """A fleet large enough for the gate slice to hold a few dozen failures: 80 equipment over
    120 days, half of them failing every three to four weeks."""
    return synthetic.training_examples(
        load_catalog(settings.catalog_path), equipment=80, days=120, step_hours=4, seed=2
    )


@pytest.fixture(scope="module")
def gate_models(database, small_forests, gate_examples):
    """Three versions of one registered model, trained once for the gate tests with half the
    fleet held out (so the gate slice holds a quarter of it): `good` learnt the failures,
    `shuffled` learnt labels shuffled across the rows, `reseeded` is good's training with
    another seed. Each test sets the aliases it starts from."""
    from emps.ml.predict import forget_cached_models

    forget_cached_models()
    settings = database.replace(
        ml={
            "model_name": f"equipment-failure-gate-{uuid.uuid4().hex[:8]}",
            "test_equipment_fraction": 0.5,
            "gate_min_failures": 5,
            **small_forests,
        }
    )
    examples, failures = gate_examples
    reseeded = settings.replace(ml={"seed": settings.ml.seed + 1})
    versions = {
        "good": train_and_register(settings, examples, failures).version,
        "shuffled": train_and_register(settings, shuffled(examples), failures).version,
        "reseeded": train_and_register(reseeded, examples, failures).version,
    }
    return settings, versions


@pytest.fixture
def gate(gate_models, db):
    """The gate models with no champion and no challenger yet, and no promotion history."""
    from emps.ml.predict import forget_cached_models

    settings, versions = gate_models
    mlflow = registry.client(settings)
    for alias in (registry.CHAMPION, registry.CHALLENGER):
        if registry.alias_version(alias, settings) is not None:
            mlflow.delete_registered_model_alias(settings.ml.model_name, alias)
    forget_cached_models()
    return settings, versions


def shuffled(examples, seed: int = 5):
    copy = examples.copy()
    copy[LABEL] = np.random.default_rng(seed).permutation(copy[LABEL].to_numpy())
    return copy


def test_training_logs_a_complete_run_and_registers_a_challenger(ml_settings, synthetic_examples):
    """A trained version carries metrics, plots, data window and versions, and becomes challenger;
    its progress bar counts every step it shows, one per out-of-fold forest."""
    examples, failures = synthetic_examples
    steps = []
    result = train_and_register(ml_settings, examples, failures, steps.append)
    assert len(steps) == training_steps(ml_settings)
    folds = ml_settings.ml.calibration_folds
    assert [s for s in steps if "out-of-fold" in s][-1].endswith(f"forest {folds} of {folds}")
    client = registry.client(ml_settings)
    run = client.get_run(result.run_id)
    assert {
        "failures_warned_share",
        "failures_warned_share_ci95_low",
        "median_lead",
        "false_alert_episodes_per_100_equipment_months",
        "alerts_per_week",
        "rul_mae_displayed",
        "rul_mae_naive",
        "pr_auc",
        "brier",
    } <= set(run.data.metrics)
    # Accuracy restates the base rate; figures at a threshold chosen on the test rows flatter.
    assert not {"accuracy", "recall_at_target_precision", "recall"} & set(run.data.metrics)
    assert run.data.params["split"] == "continuous"
    assert run.data.params["life_unit"] == "day"
    assert run.data.tags["window.test_start"] and run.data.tags["catalog_checksum"]
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {
        "plots/pr_curve.png",
        "plots/calibration_curve.png",
        "plots/feature_importance.png",
        "plots/lead_time_histogram.png",
        "plots/remaining_life.png",
    }
    assert registry.alias_version(registry.CHALLENGER, ml_settings) == result.version
    assert registry.alias_version(registry.CHAMPION, ml_settings) is None
    loaded, digest = registry.load_version(result.version, ml_settings)
    assert digest == registry.recorded_digest(result.version, ml_settings)
    X = loaded.matrix(examples.head(50))
    np.testing.assert_allclose(loaded.failure_probability(X), result.model.failure_probability(X))


def test_first_model_becomes_champion_and_is_recorded(ml_settings, synthetic_examples):
    """With no champion yet, the gate promotes the first version and ops.model_promotions says so."""
    examples, failures = synthetic_examples
    version = train_and_register(ml_settings, examples, failures).version
    decision = registry.run_gate(version, "tester", ml_settings, examples, failures)
    assert decision.promoted
    assert registry.alias_version(registry.CHAMPION, ml_settings) == version
    assert registry.alias_version(registry.CHALLENGER, ml_settings) is None
    assert promotions(ml_settings) == [(None, version, "tester", decision.reason)]


def test_gate_refuses_a_worse_challenger(gate, gate_examples):
    """A challenger trained on shuffled labels stays challenger; the champion and history are
    unchanged, and the reason gives the improvement's interval."""
    settings, versions = gate
    examples, failures = gate_examples
    good, bad = versions["good"], versions["shuffled"]
    registry.run_gate(good, "tester", settings, examples, failures)
    registry.set_challenger(bad, settings)  # as its training left it
    decision = registry.run_gate(bad, "tester", settings, examples, failures)
    assert not decision.promoted
    assert decision.reason.startswith("gate refused") and "95 % interval" in decision.reason
    assert decision.comparison["high"] < 0
    assert registry.alias_version(registry.CHAMPION, settings) == good
    assert registry.alias_version(registry.CHALLENGER, settings) == bad
    assert len(promotions(settings)) == 1


def test_gate_refuses_a_challenger_better_only_within_noise(gate, gate_examples):
    """The same training with another seed differs from the champion only by chance: the
    interval of its improvement over the held-out equipment reaches zero, so it stays
    challenger."""
    settings, versions = gate
    examples, failures = gate_examples
    champion, challenger = versions["good"], versions["reseeded"]
    registry.run_gate(champion, "tester", settings, examples, failures)
    decision = registry.run_gate(challenger, "tester", settings, examples, failures)
    assert not decision.promoted
    assert decision.comparison["low"] <= 0 <= decision.comparison["high"]
    assert "not better" in decision.reason
    assert registry.alias_version(registry.CHAMPION, settings) == champion


def test_gate_promotes_a_challenger_better_beyond_noise_given_enough_failures(gate, gate_examples):
    """A champion that learnt from shuffled labels gives way to one that learnt the failures:
    the lower end of the improvement's interval is above zero, and the history says so. With
    fewer held-out failures than a comparison needs, the same challenger is not promoted, and
    the reason names the count, the setting and how to override."""
    settings, versions = gate
    examples, failures = gate_examples
    weak, strong = versions["shuffled"], versions["good"]
    registry.run_gate(weak, "tester", settings, examples, failures)
    strict = settings.replace(ml={"gate_min_failures": 10_000})
    refused = registry.run_gate(strong, "tester", strict, examples, failures)
    assert not refused.promoted
    assert "EMPS_ML_GATE_MIN_FAILURES" in refused.reason and "--force" in refused.reason
    assert registry.alias_version(registry.CHAMPION, settings) == weak
    decision = registry.run_gate(strong, "tester", settings, examples, failures)
    assert decision.promoted and decision.comparison["low"] > 0
    assert decision.comparison["failures"] >= settings.ml.gate_min_failures
    assert registry.alias_version(registry.CHAMPION, settings) == strong
    assert promotions(settings)[-1][:3] == (weak, strong, "tester")
    assert "better beyond noise" in promotions(settings)[-1][3]


def test_forced_promotion_is_recorded_as_forced(ml_settings, synthetic_examples):
    """An engineer can override the gate, and the history names them and says it was forced."""
    examples, failures = synthetic_examples
    good = train_and_register(ml_settings, examples, failures).version
    registry.run_gate(good, "tester", ml_settings, examples, failures)
    bad = train_and_register(ml_settings, shuffled(examples), failures).version
    decision = registry.run_gate(bad, "alice", ml_settings, force=True)
    assert decision.promoted
    assert promotions(ml_settings)[-1] == (good, bad, "alice", "forced by alice, gate skipped")
