"""MLflow registry: what training logs, the promotion gate and the promotion history."""

from __future__ import annotations

import numpy as np
import pytest

from emps.db import Role, connect
from ml import registry
from ml.dataset import LABEL
from ml.train import train_and_register, training_steps


def promotions(settings) -> list[tuple]:
    with connect(Role.OWNER, settings) as conn:
        return conn.execute(
            "select from_version, to_version, promoted_by, reason from ops.model_promotions "
            "where model_name = %s order by id",
            (settings.model_name,),
        ).fetchall()


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
    folds = ml_settings.ml_calibration_folds
    assert [s for s in steps if "out-of-fold" in s][-1].endswith(f"forest {folds} of {folds}")
    client = registry.client(ml_settings)
    run = client.get_run(result.run_id)
    assert {"recall", "precision", "fpr", "pr_auc", "roc_auc", "brier", "accuracy"} <= set(
        run.data.metrics
    )
    assert {"median_lead_days", "rul_mae_days", "alerts_per_100_equipment_days"} <= set(
        run.data.metrics
    )
    assert run.data.tags["window.test_start"] and run.data.tags["catalog_checksum"]
    assert float(run.data.params["threshold"]) == pytest.approx(result.model.threshold, abs=1e-6)
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert plots == {
        "plots/confusion_matrix.png",
        "plots/pr_curve.png",
        "plots/calibration_curve.png",
        "plots/feature_importance.png",
        "plots/lead_time_histogram.png",
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


def test_gate_refuses_a_worse_challenger(ml_settings, synthetic_examples):
    """A challenger trained on shuffled labels stays challenger; the champion and history are unchanged."""
    examples, failures = synthetic_examples
    good = train_and_register(ml_settings, examples, failures).version
    registry.run_gate(good, "tester", ml_settings, examples, failures)
    bad = train_and_register(ml_settings, shuffled(examples), failures).version
    decision = registry.run_gate(bad, "tester", ml_settings, examples, failures)
    assert not decision.promoted
    assert decision.reason.startswith("gate refused")
    assert decision.challenger_metrics["pr_auc"] < decision.champion_metrics["pr_auc"]
    assert registry.alias_version(registry.CHAMPION, ml_settings) == good
    assert registry.alias_version(registry.CHALLENGER, ml_settings) == bad
    assert len(promotions(ml_settings)) == 1


def test_forced_promotion_is_recorded_as_forced(ml_settings, synthetic_examples):
    """An engineer can override the gate, and the history names them and says it was forced."""
    examples, failures = synthetic_examples
    good = train_and_register(ml_settings, examples, failures).version
    registry.run_gate(good, "tester", ml_settings, examples, failures)
    bad = train_and_register(ml_settings, shuffled(examples), failures).version
    decision = registry.run_gate(bad, "alice", ml_settings, force=True)
    assert decision.promoted
    assert promotions(ml_settings)[-1] == (good, bad, "alice", "forced by alice, gate skipped")
