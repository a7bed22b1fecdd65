"""Fleets brought in as packs, through the platform's own commands, end to end: import, feature
build, training, evaluation, scoring, alerts. Their data come from tests/fleets/generator.py,
which shares no code with the simulator."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from generator import hourly, run_to_failure, write_drop_pack, write_text_pack

from emps import transform
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.fleet.importer import import_pack
from emps.ml import registry

HERE = Path(__file__).parent


@pytest.fixture
def fleet_settings(database, tmp_path):
    """Settings for a fresh database of its own, a catalog installed under tmp_path, a model
    registry of its own and small forests."""

    def make(name: str):
        settings = database.replace(
            catalog_path=tmp_path / "catalog.yaml",
            database={"pg_database": f"emps_pack_{name}"},
            ml={
                "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "mlflow_artifact_root": tmp_path / "artifacts",
                "model_name": f"pack-{name}",
                "n_estimators": 30,
                "n_jobs": 1,
                "min_samples_leaf": 5,
            },
        )
        from emps.db import ensure_database

        ensure_database(settings)
        with connect(
            Role.OWNER, settings.replace(database={"pg_database": "postgres"}), autocommit=True
        ) as conn:
            conn.execute(f'drop database if exists "{settings.database.pg_database}" with (force)')
            conn.execute(f'create database "{settings.database.pg_database}"')
        return settings

    return make


def read(settings, query: str, params=None) -> pd.DataFrame:
    with connect(Role.OWNER, settings) as conn, conn.cursor() as cur:
        cur.execute(query, params)
        return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def test_a_pack_imports_once_and_names_each_refusal(fleet_settings, tmp_path):
    """Importing a pack loads what is sound and names every refused row by file, row and field;
    importing it again adds nothing."""
    catalog_path = HERE / "hourly.yaml"
    fleet = hourly(load_catalog(catalog_path), machines_per_type=3, days=6, seed=2)
    pack = tmp_path / "pack"
    write_drop_pack(fleet, catalog_path, pack)
    with (pack / "failures.csv").open("a") as handle:
        handle.write("CHI01,not a date,,bearing\n")
    with (pack / "equipment.csv").open("a") as handle:
        handle.write("XYZ01,boiler,north,\n")
    with (pack / "maintenance.csv").open("a") as handle:
        handle.write("XYZ01,2026-05-03T10:00:00Z,preventive,failed_before_service\n")
    settings = fleet_settings("refusals")

    report = import_pack(pack, settings, catalog_target=tmp_path / "catalog.yaml")

    problems = [str(p) for p in report.problems]
    rows = len(pd.read_csv(pack / "failures.csv"))
    assert f"failures.csv, row {rows + 1}, field 'failed_at': not an ISO-8601 date-time" in problems
    assert any(
        p.startswith("equipment.csv, row ") and "'boiler' is not a type" in p for p in problems
    )
    # A service of the equipment refused above is refused too, by its own row.
    services = len(pd.read_csv(pack / "maintenance.csv"))
    assert (
        f"maintenance.csv, row {services + 1}, field 'equipment_id': 'XYZ01' is not in "
        "equipment.csv (nor named by the readings)" in problems
    )
    steps = {s.name: s for s in report.steps}
    assert steps["equipment"].loaded == len(fleet.equipment)
    assert steps["readings"].loaded == len(fleet.readings)
    assert steps["failures"].loaded == len(fleet.failures)
    assert steps["maintenance"].loaded == len(fleet.maintenance)
    assert steps["maintenance"].refused == 1
    again_report = import_pack(pack, settings, catalog_target=tmp_path / "catalog.yaml")
    again = {s.name: s for s in again_report.steps}
    assert again["readings"].loaded == 0 and again["failures"].loaded == 0
    assert again["equipment"].loaded == 0 and again["equipment"].known == len(fleet.equipment)
    assert again_report.problems == report.problems  # files imported before are no problem
    counts = read(settings, "select count(*) as n from raw.sensor_readings")
    assert counts["n"].iloc[0] == len(fleet.readings)


def test_reimporting_a_pack_whose_catalog_gained_a_sensor_migrates_in_place(
    fleet_settings, tmp_path
):
    """A pack imported, then its catalog gains a sensor and its readings a file that carries
    it: the second import adds the column, loads the new readings with it, and leaves the
    first import's readings as they were."""
    import yaml

    catalog_path = HERE / "hourly.yaml"
    fleet = hourly(load_catalog(catalog_path), machines_per_type=2, days=4, seed=5)
    pack = tmp_path / "pack"
    write_drop_pack(fleet, catalog_path, pack)
    settings = fleet_settings("catalog-change")
    target = tmp_path / "catalog.yaml"
    first = import_pack(pack, settings, catalog_target=target)
    assert not first.problems and "oil_pressure" not in first.columns_added

    catalog = yaml.safe_load((pack / "catalog.yaml").read_text())
    catalog["channels"]["oil_pressure"] = {"unit": "bar", "valid_range": [0, 10]}
    catalog["equipment_types"]["feeder_pump"]["channels"].append("oil_pressure")
    (pack / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    pump = fleet.equipment.loc[
        fleet.equipment["equipment_type"] == "feeder_pump", "equipment_id"
    ].iloc[0]
    last = fleet.readings[fleet.readings["equipment_id"] == pump].iloc[-1]
    later = pd.DataFrame(
        {
            "equipment_id": pump,
            "timestamp": [
                (last["ts"] + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in (1, 2, 3)
            ],
            **{c: last[c] for c in ("coolant_temp", "bearing_noise", "flow_rate")},
            "oil_pressure": [3.0, 3.5, 4.0],
        }
    )
    later.to_csv(pack / "readings" / "later.csv", index=False)

    second = import_pack(pack, settings, catalog_target=target)
    assert second.columns_added == ["oil_pressure"]
    steps = {s.name: s for s in second.steps}
    assert steps["readings"].loaded == len(later) and not second.problems
    stored = read(
        settings,
        "select count(*) as n, count(oil_pressure) as with_oil, sum(oil_pressure) as oil"
        " from raw.sensor_readings",
    ).iloc[0]
    assert stored["n"] == len(fleet.readings) + len(later)
    assert stored["with_oil"] == len(later) and stored["oil"] == pytest.approx(10.5)


def _train_score_alert(settings, degrading: pd.DataFrame, catalog) -> dict:
    """Build, train and promote, evaluate, then a degrading machine's readings arrive: scored and
    alerted. What each step produced."""
    from emps.alerting.rules import process_pending
    from emps.ml.predict import score_equipment
    from emps.ml.train import retrain

    transform.build(full_refresh=True, settings=settings, catalog=catalog)
    result, decision = retrain("pack-test", settings)
    assert decision.promoted, decision.reason
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        columns = [
            "equipment_id",
            "ts",
            *[c for c in ("cycle", *catalog.channel_names) if c in degrading],
        ]
        with conn.cursor().copy(
            f"copy raw.sensor_readings ({', '.join(columns)}) from stdin"  # noqa: S608
        ) as copy:
            for row in degrading[columns].itertuples(index=False):
                copy.write_row([None if isinstance(v, float) and np.isnan(v) else v for v in row])
    transform.build_after_ingest(settings)
    scored = score_equipment(
        settings, equipment_ids=list(degrading["equipment_id"].unique()), only_unscored=False
    )
    outcomes = process_pending(settings)
    return {"result": result, "scored": scored, "alerts": outcomes}


def test_an_hourly_fleet_with_maintenance_outcomes_end_to_end(fleet_settings, tmp_path):
    """An hourly fleet of two types whose services found failures: the outcomes become labels,
    a model is trained and evaluated on the pack, and a machine drifting the way the failing ones
    did is scored HIGH or worse and raises an alert."""
    catalog_path = HERE / "hourly.yaml"
    catalog = load_catalog(catalog_path)
    fleet = hourly(catalog, machines_per_type=10, days=60, seed=7, failure_every_days=12)
    pack = tmp_path / "pack"
    write_drop_pack(fleet, catalog_path, pack)
    settings = fleet_settings("hourly")
    report = import_pack(pack, settings, catalog_target=tmp_path / "catalog.yaml")
    assert report.ok, report.problems
    labels = read(settings, "select source, count(*) as n from raw.failure_events group by source")
    found = dict(zip(labels["source"], labels["n"], strict=True))
    assert found["maintenance"] == (fleet.maintenance["outcome"] == "failed_before_service").sum()
    assert found["import"] == len(fleet.failures)

    # A chiller drifting on its coolant for two days, after the history.
    last = fleet.readings["ts"].max()
    ts = pd.date_range(last + timedelta(hours=1), periods=48, freq="h", tz="UTC")
    drift = np.linspace(0, 6, len(ts))
    degrading = pd.DataFrame(
        {
            "equipment_id": "CHI02",
            "ts": ts,
            "coolant_temp": 8 + 2 * drift,
            "discharge_pressure": 12.0,
            "motor_current": 120.0,
        }
    )
    out = _train_score_alert(
        settings.model_copy(update={"catalog_path": tmp_path / "catalog.yaml"}), degrading, catalog
    )
    metrics = out["result"].metrics
    assert 0 <= metrics["brier"] < 0.25
    assert (
        out["scored"].by_severity.get("HIGH", 0) + out["scored"].by_severity.get("CRITICAL", 0) == 1
    )
    assert [o.action for o in out["alerts"]] == ["opened"]


def test_run_to_failure_engines_from_whitespace_text_end_to_end(fleet_settings, tmp_path):
    """Engines on a cycle clock, their readings headerless whitespace text read through a column
    map, run to failure, with test units cut before failing: imported without edits, trained
    with whole engines held out, and a test unit near its end scored and alerted."""
    catalog_path = HERE / "turbofan.yaml"
    catalog = load_catalog(catalog_path)
    train = run_to_failure(catalog, "turbofan", engines=36, seed=11, life=(80, 140))
    test = run_to_failure(catalog, "turbofan", engines=8, seed=12, life=(80, 140))
    pack = tmp_path / "pack"
    write_text_pack(train, catalog_path, pack, test_units=test)
    settings = fleet_settings("engines")
    report = import_pack(pack, settings, catalog_target=tmp_path / "catalog.yaml")
    assert report.ok, report.problems
    units = read(settings, "select holdout, count(*) as n from raw.equipment group by holdout")
    assert dict(zip(units["holdout"], units["n"], strict=True)) == {False: 36, True: 8}
    failures = read(settings, "select count(*) as n from raw.failure_events")
    assert failures["n"].iloc[0] == 36
    # The cut test engine with the least life left keeps running, a few cycles more.
    truth = read(
        settings,
        "select equipment_id, remaining_life from raw.heldout_remaining_life order by remaining_life",
    )
    assert len(truth) == 8
    settings = settings.model_copy(update={"catalog_path": tmp_path / "catalog.yaml"})
    nearest = truth["equipment_id"].iloc[0]
    number = int(nearest.removeprefix("ENG-T"))
    engine = test.readings[
        test.readings["equipment_id"] == sorted(test.readings["equipment_id"].unique())[number - 1]
    ]
    seen = read(
        settings,
        "select max(cycle) as c from raw.sensor_readings where equipment_id = %s",
        (nearest,),
    )
    more = engine[engine["cycle"] > seen["c"].iloc[0]].head(3).assign(equipment_id=nearest)
    clock = catalog.equipment_types["turbofan"].clock
    more["ts"] = pd.Timestamp(clock.start) + pd.to_timedelta(more["cycle"] * clock.interval_s, "s")
    out = _train_score_alert(settings, more, catalog)
    metrics = out["result"].metrics
    # Judged on every engine by the grouped k-fold: failures seen coming, life beats a constant.
    assert metrics["failures_evaluated"] == 36
    assert metrics["failures_warned_share"] >= 0.8
    assert metrics["rul_mae_displayed"] < metrics["rul_mae_naive"]
    # The test units, each at its cut with its true remaining life, are scored too: the
    # benchmark figure, logged to MLflow, better than the naive constant's.
    assert metrics["test_units"] == 8
    assert metrics["test_units_rul_mae_displayed"] < metrics["test_units_rul_mae_naive"]
    run = registry.client(settings).get_run(out["result"].run_id)
    logged = run.data.metrics
    assert logged["test_units_rul_rmse"] == pytest.approx(metrics["test_units_rul_rmse"])
    scored = read(
        settings,
        "select severity, remaining_life, life_unit from ops.predictions "
        "where equipment_id = %s order by ts desc limit 1",
        (nearest,),
    )
    left = truth["remaining_life"].iloc[0] - len(more)
    assert scored["life_unit"].iloc[0] == "cycle"
    assert abs(scored["remaining_life"].iloc[0] - left) < 30, (scored, left)
