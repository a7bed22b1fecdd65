"""A run-to-failure fleet on a cycle clock, from a generator that shares nothing with the
built-in simulator: split by whole units, figures and remaining life in cycles."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emps import transform
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ml import predict, registry
from emps.ml.dataset import read_failure_events, read_training_examples
from emps.ml.train import train_and_register

sys.path.insert(0, str(Path(__file__).parent.parent / "fleets"))
from generator import run_to_failure, with_derived_time  # noqa: E402
from test_catalogs import fleet_database, load  # noqa: E402


@pytest.fixture
def engines(ml_settings):
    """40 engines flown until they fail, through the platform's own dbt build, with settings
    that train on that database's marts."""
    settings = fleet_database(ml_settings, "turbofan").replace(
        ml={
            "features_relation": "analytics.fct_equipment_features",
            "examples_relation": "analytics.mart_training_examples",
        }
    )
    catalog = load_catalog(settings.catalog_path)
    fleet = run_to_failure(catalog, "turbofan", engines=40, seed=11)
    load(settings, fleet.equipment, with_derived_time(fleet, catalog))
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.cursor().executemany(
            "insert into raw.failure_events (equipment_id, failed_at, failure_mode, source) "
            "values (%s, %s, %s, 'import')",
            list(fleet.failures[["equipment_id", "failed_at", "failure_mode"]].itertuples(False)),
        )
    transform.build(full_refresh=True, settings=settings, catalog=catalog)
    return settings, fleet


def test_run_to_failure_engines_are_split_by_whole_units_and_judged_in_cycles(engines):
    """Training recognises the run-to-failure history, holds out whole engines in a grouped
    k-fold over all of them (recorded in MLflow), judges every engine's failure, tells leads
    and remaining life in cycles, and beats the naive remaining-life baseline; scoring then
    gives every engine, healthy or not, a remaining life in cycles, capped at 125."""
    settings, fleet = engines
    examples = read_training_examples(settings)
    failures = read_failure_events(settings)
    result = train_and_register(settings, examples, failures)
    run = registry.client(settings).get_run(result.run_id)
    assert run.data.params["split"] == "run_to_failure"
    assert "grouped k-fold" in run.data.params["evaluation"]
    assert run.data.params["life_unit"] == "cycle"
    assert run.data.params["rul_cap"] == "turbofan 125"
    metrics = result.metrics
    assert metrics["failures_evaluated"] == len(fleet.failures)  # every engine, once
    assert metrics["failures_warned_share"] > 0.5
    lifetimes = fleet.failures["cycle"]
    assert 3 <= metrics["median_lead"] <= lifetimes.max()  # cycles, not days
    assert metrics["rul_mae_displayed"] < metrics["rul_mae_naive"]
    assert metrics["rul_rows_censored"] == 0  # every engine ran to its failure

    registry.run_gate(result.version, "tester", settings, examples, failures)
    report = predict.score_equipment(settings, emit_events=False)
    assert report.scored == len(fleet.equipment)
    with connect(Role.OWNER, settings) as conn:
        cur = conn.execute(
            "select severity, remaining_life, life_unit, remaining_life_beyond, assessment "
            "from ops.predictions"
        )
        scored = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    assert (scored["life_unit"] == "cycle").all()
    assert scored["remaining_life"].notna().all() and (scored["remaining_life"] <= 125).all()
    assert np.array_equal(scored["remaining_life_beyond"], scored["remaining_life"] >= 125)
    assert set(scored["assessment"]) <= {"ok", "insufficient_data", "out_of_distribution"}
