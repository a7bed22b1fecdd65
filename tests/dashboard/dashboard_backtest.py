"""A champion and a stored history whose backtest is known by hand, for the dashboard tests
(the ML tests' tests/ml/backtest_history.py, loaded by path under a name of its own)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sibling_modules import load_module

from emps.ml import synthetic
from emps.settings import Settings

history = load_module("ml_backtest_history", "tests/ml/backtest_history.py")

FEATURES = "dashboard_test.features"


@dataclass
class ReplayChampion:
    """What the dashboard's backtest of the seeded history must show with the bands in force
    (0.3 / 0.6 / 0.85), and with MEDIUM and HIGH lowered to `lower_medium` and `lower_high`."""

    version: str
    case: object
    alerts: int = 3  # the half-strength blip stays below HIGH
    alerts_lower_high: int = 4  # ... and rises above `lower_high`
    lower_medium: float = 0.1
    lower_high: float = 0.2
    failures: int = 3
    warned: int = 1


def ml_environment(root) -> dict[str, str]:
    """EMPS_* variables pointing the dashboard at a registry of its own and the test features."""
    return {
        "EMPS_MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "EMPS_MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "EMPS_ML_FEATURES_RELATION": FEATURES,
        "EMPS_ML_EXAMPLES_RELATION": FEATURES,
        "EMPS_ML_N_ESTIMATORS": "20",
        "EMPS_ML_N_JOBS": "1",
        "EMPS_ML_MIN_SAMPLES_LEAF": "20",
        "EMPS_ML_SAMPLE_MINUTES": "60",
    }


def seed_replay_champion(settings: Settings, now) -> ReplayChampion:
    """Train and promote a champion on the graded signal; store a history ending now whose
    three replayed weeks begin four weeks ago, and its failures."""
    from emps.catalog import load_catalog
    from emps.db import Role, connect
    from emps.ml import registry
    from emps.ml.train import train_and_register

    # The registry is new: what an earlier test recorded for its version 1 does not hold.
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            "delete from ops.model_artifacts where model_name = %s", (settings.ml.model_name,)
        )
    catalog = load_catalog(settings.catalog_path)
    horizon = pd.Timedelta(days=catalog.max_horizon_days)
    examples, failures = history.training_history(catalog, horizon, graded=True)
    version = train_and_register(settings, examples, failures).version
    registry.run_gate(version, "tester", settings, examples, failures, force=True)
    start = pd.Timestamp(now).floor("h") - pd.Timedelta(days=28)
    case = history.replay_case(catalog, start, after_days=7, half_blip=True)
    synthetic.load_examples(case.rows, settings, FEATURES)
    history.store_failures(case.failures, settings)
    return ReplayChampion(version, case)
