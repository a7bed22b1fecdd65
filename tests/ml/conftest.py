"""ML fixtures: one real MLflow sqlite store per session, a registered model name per test, and
synthetic feature rows (shaped like the dbt contract) in a table of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from emps.catalog import load_catalog
from emps.ml import synthetic
from emps.settings import Settings, get_settings, variables

TEST_RELATION = "ml_test.examples"


@pytest.fixture(scope="session")
def mlflow_store(test_home: Path) -> dict[str, object]:
    """Where this session's MLflow tracking store and artifacts live."""
    root = test_home / "mlflow-tests"
    root.mkdir(parents=True, exist_ok=True)
    return {
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow_artifact_root": root / "artifacts",
    }


@pytest.fixture(scope="session")
def synthetic_examples(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training examples, failure events) for 30 equipment over 100 days, every 4 hours."""
    return synthetic.training_examples(
        load_catalog(settings.catalog_path), equipment=30, days=100, step_hours=4
    )


@pytest.fixture(scope="session")
def small_forests(mlflow_store: dict[str, object]) -> dict[str, object]:
    """The model settings of these tests but its name: small fast forests, the synthetic
    examples' table, this session's MLflow store."""
    return {
        "n_estimators": 20,
        "n_jobs": 1,
        "min_samples_leaf": 20,
        "sample_minutes": 60,
        "features_relation": TEST_RELATION,
        "examples_relation": TEST_RELATION,
        **mlflow_store,
    }


@pytest.fixture
def ml_settings(db: Settings, small_forests: dict[str, object]) -> Settings:
    """Settings for one test: its own registered model name, small fast forests."""
    from emps.ml.predict import forget_cached_models

    forget_cached_models()
    return db.replace(
        ml={"model_name": f"equipment-failure-{uuid.uuid4().hex[:8]}", **small_forests}
    )


@pytest.fixture
def ml_env(ml_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The same settings through EMPS_* variables, for code that calls get_settings() (flows, CLI)."""
    fields = (
        "mlflow_tracking_uri",
        "mlflow_artifact_root",
        "model_name",
        "n_estimators",
        "n_jobs",
        "sample_minutes",
        "features_relation",
        "examples_relation",
    )
    for variable in variables():
        if variable.area == "ml" and variable.field in fields:
            monkeypatch.setenv(variable.name, str(variable.value(ml_settings)))
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def examples_in_db(ml_settings: Settings, synthetic_examples) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The synthetic examples; their last day per equipment is this test's feature table.

    Scoring only reads each equipment's latest rows and tests pass the full examples to training
    directly, so only the tail goes through the (slow) CSV load.
    """
    examples, failures = synthetic_examples
    tail = examples[examples["ts"] > examples["ts"].max() - pd.Timedelta(days=1)]
    synthetic.load_examples(tail, ml_settings, TEST_RELATION)
    return examples, failures
