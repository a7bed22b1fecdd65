"""ML fixtures: one real MLflow sqlite store per session, a registered model name per test, and
synthetic feature rows (shaped like the dbt contract) in a table of their own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import synthetic

from emps.catalog import load_catalog
from emps.settings import Settings, get_settings

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


@pytest.fixture
def ml_settings(db: Settings, mlflow_store: dict[str, object]) -> Settings:
    """Settings for one test: its own registered model name, small fast forests."""
    from emps.ml.predict import forget_cached_models

    forget_cached_models()
    return db.model_copy(
        update={
            **mlflow_store,
            "model_name": f"equipment-failure-{uuid.uuid4().hex[:8]}",
            "ml_n_estimators": 20,
            "ml_n_jobs": 1,
            "ml_min_samples_leaf": 20,
            "ml_sample_minutes": 60,
            "ml_features_relation": TEST_RELATION,
            "ml_examples_relation": TEST_RELATION,
        }
    )


@pytest.fixture
def ml_env(ml_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The same settings through EMPS_* variables, for code that calls get_settings() (flows, CLI)."""
    for name in (
        "mlflow_tracking_uri",
        "mlflow_artifact_root",
        "model_name",
        "ml_n_estimators",
        "ml_n_jobs",
        "ml_sample_minutes",
        "ml_features_relation",
        "ml_examples_relation",
    ):
        monkeypatch.setenv(f"EMPS_{name.upper()}", str(getattr(ml_settings, name)))
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
