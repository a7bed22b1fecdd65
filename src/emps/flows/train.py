"""The `retrain-failure-model` flow: train a challenger; the gate decides if it becomes champion."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from emps.ml import registry
from emps.ml.dataset import read_failure_events, read_training_examples
from emps.ml.train import TrainResult, train_and_register
from emps.settings import get_settings


@task(name="read-training-examples", cache_policy=NONE, retries=2, retry_delay_seconds=10)
def read_examples() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Labelled feature rows from analytics.mart_training_examples, and the failure events."""
    settings = get_settings()
    return read_training_examples(settings), read_failure_events(settings)


@task(name="train-challenger", cache_policy=NONE)
def train_challenger(examples: pd.DataFrame, failures: pd.DataFrame) -> TrainResult:
    """Fit, calibrate, evaluate on held-out equipment and time, log to MLflow, alias `challenger`;
    each step is logged as it starts, so the run's log shows where a long training is."""
    return train_and_register(get_settings(), examples, failures, get_run_logger().info)


@task(name="run-promotion-gate", cache_policy=NONE)
def run_gate(
    version: str, examples: pd.DataFrame, failures: pd.DataFrame, actor: str
) -> registry.GateDecision:
    """Promote the challenger only if it beats the champion on the same held-out rows."""
    return registry.run_gate(version, actor, get_settings(), examples, failures)


@flow(name="retrain-failure-model", log_prints=True)
def retrain_failure_model(actor: str = "retrain-failure-model") -> dict:
    """Weekly: train a new failure model on the latest dbt training examples, register it as
    `challenger` in MLflow, and promote it to `champion` only if it passes the gate."""
    examples: pd.DataFrame
    failures: pd.DataFrame
    # pandas has no type information: Prefect's Task.__call__ overloads would read a frame as a
    # coroutine.
    examples, failures = read_examples()
    result = train_challenger(examples, failures)
    decision = run_gate(result.version, examples, failures, actor)
    get_run_logger().info("version %s: %s", result.version, decision.reason)
    return {
        "version": result.version,
        "run_id": result.run_id,
        "metrics": result.metrics,
        "gate": {k: v for k, v in asdict(decision).items() if not k.endswith("_metrics")},
    }


if __name__ == "__main__":
    retrain_failure_model()
