"""The weekly retrain-failure-model flow on a fleet as small as the default one."""

from __future__ import annotations

from emps.ml import registry, synthetic


def test_weekly_retrain_keeps_the_champion_while_the_gate_slice_is_thin_and_says_why(
    prefect_server, ml_env, synthetic_examples
):
    """The first run promotes its model (no champion yet); the next week's run registers a
    challenger and keeps the champion, because the gate slice holds fewer held-out failures
    than a comparison needs (10): the flow's result gives the count and the way to override.
    The default fleet (200 machines, 60 days) is in the same position: about two failures in
    its gate slice."""
    from emps.flows.train import retrain_failure_model

    examples, _ = synthetic_examples
    synthetic.load_examples(examples, ml_env, ml_env.ml.examples_relation)
    first = retrain_failure_model(actor="weekly")
    assert first["gate"]["promoted"] and first["gate"]["reason"].startswith("first champion")
    second = retrain_failure_model(actor="weekly")
    gate = second["gate"]
    assert not gate["promoted"]
    assert gate["comparison"]["failures"] < ml_env.ml.gate_min_failures == 10
    assert f"holds {gate['comparison']['failures']} held-out failures" in gate["reason"]
    assert "fewer than the 10" in gate["reason"] and "--force" in gate["reason"]
    assert registry.alias_version(registry.CHAMPION, ml_env) == first["version"]
    assert registry.alias_version(registry.CHALLENGER, ml_env) == second["version"]
