"""`emps up --fleet PACK`: the platform on a real fleet. What `emps up` does before its servers
(which fleet runs, the migrations) and the bootstrap command it runs, on a pack made by
tests/fleets/generator.py (not the simulator), in an install of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from generator import run_to_failure, write_text_pack
from typer.testing import CliRunner

from emps import transform
from emps.catalog import load_catalog
from emps.cli import app
from emps.db import Role, connect
from emps.fleet.running import FleetRefused, fleet_banner, plan_fleet
from emps.migrate import migrate
from emps.settings import get_settings
from emps.supervisor import app_services, bootstrap_args

HERE = Path(__file__).parent
DATABASE = "emps_fleet_up"


@pytest.fixture
def fleet_install(database, tmp_path, monkeypatch):
    """The environment of an install of its own, as `emps up` and its children read it: a home,
    a fresh database on the session's server, a model registry, small forests, and no
    EMPS_CATALOG_PATH (a pack brings its catalog)."""
    monkeypatch.delenv("EMPS_CATALOG_PATH", raising=False)
    for name, value in {
        "EMPS_HOME": str(tmp_path / "home"),
        "EMPS_PG_DATABASE": DATABASE,
        "EMPS_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "EMPS_MLFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "EMPS_MODEL_NAME": "fleet-up",
        "EMPS_ML_N_ESTIMATORS": "30",
        "EMPS_ML_N_JOBS": "1",
        "EMPS_ML_MIN_SAMPLES_LEAF": "5",
    }.items():
        monkeypatch.setenv(name, value)
    with connect(
        Role.OWNER, database.replace(database={"pg_database": "postgres"}), autocommit=True
    ) as conn:
        conn.execute(f'drop database if exists "{DATABASE}" with (force)')
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def counts(settings) -> dict[str, int]:
    """What a duplicate would show in: rows of every table an import or a bootstrap writes."""
    tables = {
        "equipment": "raw.equipment",
        "readings": "raw.sensor_readings",
        "failures": "raw.failure_events",
        "services": "ops.maintenance_tasks",
        "files": "raw.ingest_files",
        "imports": "raw.fleet_imports",
        "predictions": "ops.predictions",
        "simulated": "raw.equipment where source = 'simulator'",
    }
    with connect(Role.OWNER, settings) as conn:
        return {
            name: conn.execute(f"select count(*) from {table}").fetchone()[0]  # noqa: S608
            for name, table in tables.items()
        }


def start(pack: Path):
    """`emps up --fleet PACK` up to its bootstrap: the fleet decided (the pack's catalog
    installed), the migrations, then the bootstrap command as `emps up` runs it."""
    plan = plan_fleet(get_settings(), pack, simulator=None, history=True)
    migrate(plan.settings)
    result = CliRunner().invoke(app, bootstrap_args(plan.with_history, plan.pack))
    assert result.exit_code == 0, result.output
    return plan, " ".join(result.output.split())


def test_emps_up_on_a_fleet_pack_trains_on_it_without_the_simulator_and_restarts_cleanly(
    fleet_install, prefect_server, tmp_path
):
    """`emps up --fleet PACK` imports the pack, trains and promotes a first model on its history
    and scores the fleet, with no simulated history and no simulator; its banner names the pack
    and its equipment; a second start with the same pack adds nothing anywhere."""
    from emps.ml.dataset import read_training_examples
    from emps.ml.registry import CHAMPION, alias_version

    catalog_path = HERE / "turbofan.yaml"
    engines = run_to_failure(load_catalog(catalog_path), "turbofan", engines=30, seed=11)
    pack = tmp_path / "pack"
    write_text_pack(engines, catalog_path, pack)

    plan, output = start(pack)
    settings = plan.settings
    first = counts(settings)
    assert first["equipment"] == 30 and first["simulated"] == 0
    assert first["readings"] == len(engines.readings)
    assert first["failures"] == 30  # run to failure: each engine's last cycle
    champion = alias_version(CHAMPION, settings)
    assert champion is not None, output
    assert first["predictions"] == 30  # the whole fleet scored by the first champion
    assert "simulator" not in {s.name for s in app_services(settings, plan.with_simulator)}
    assert fleet_banner(plan) == f"Fleet: {pack} (30 equipment); no simulator."
    assert (settings.home / "catalog.yaml").read_text() == catalog_path.read_text()
    # The fleet's devices then drop readings: each ingest run builds what they changed, and the
    # training examples the weekly retrain reads stay there.
    transform.build_after_ingest(settings)
    assert len(read_training_examples(settings)) > 0

    plan, output = start(pack)
    assert counts(plan.settings) == first
    assert "unchanged since its import" in output
    assert alias_version(CHAMPION, plan.settings) == champion
    assert not plan.with_simulator


def test_a_fleet_pack_that_cannot_run_stops_the_start_saying_where(fleet_install, tmp_path):
    """A pack with a broken catalog stops `emps up` naming the file, line and field; an install
    holding the simulated fleet refuses a pack (their failures would mix) and keeps its catalog
    and its simulator."""
    catalog_path = HERE / "turbofan.yaml"
    engines = run_to_failure(load_catalog(catalog_path), "turbofan", engines=3, seed=1)
    pack = tmp_path / "pack"
    write_text_pack(engines, catalog_path, pack)
    broken = tmp_path / "broken"
    write_text_pack(engines, catalog_path, broken)
    text = (broken / "catalog.yaml").read_text()
    (broken / "catalog.yaml").write_text(text.replace("interval: 2 h", "interval: two hours"))

    with pytest.raises(FleetRefused) as refused:
        plan_fleet(get_settings(), broken, simulator=None, history=True)
    message = str(refused.value)
    assert "catalog.yaml" in message and "line" in message and "interval" in message

    settings = get_settings()
    simulated = plan_fleet(settings, None, simulator=None, history=True)
    migrate(simulated.settings)
    assert simulated.with_simulator and simulated.with_history
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        kind = conn.execute("select equipment_type from raw.equipment_types limit 1").fetchone()[0]
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, source) "
            "values ('SIM-1', %s, 'simulator')",
            (kind,),
        )
    with pytest.raises(FleetRefused, match="simulated fleet's history"):
        plan_fleet(settings, pack, simulator=None, history=True)
    assert not (settings.home / "catalog.yaml").exists()
    assert plan_fleet(settings, None, simulator=None, history=True).with_simulator
