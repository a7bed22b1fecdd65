"""The dbt project as operators meet it: the flow, the CLI, a new catalog sensor, SQL style."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import yaml
from dbt_testdata import first_type, insert_equipment, insert_readings, read_table, series
from typer.testing import CliRunner

from emps import transform
from emps.bootstrap import rebuild_outdated_features
from emps.catalog import load_catalog
from emps.migrate import migrate
from emps.settings import PROJECT_ROOT


def test_flow_fails_when_a_dbt_test_fails(prefect_server, writer, db):
    """The build-features flow passes on good data and its run fails when a dbt test fails
    (an alert for equipment missing from the registry breaks a relationship test)."""
    from emps.flows.transform import build_features

    insert_equipment(writer, [("GEN-1", first_type(), "alpha")])
    result = build_features(select=["stg_equipment", "stg_alerts"])
    selected = {"stg_equipment", "stg_alerts"}
    assert selected <= set(result["models"])
    # Any other: a dashboard mart over them (when built) the build dropped and put back.
    assert all(m.startswith("mart_") for m in set(result["models"]) - selected), result

    writer.execute(
        "insert into ops.alerts (equipment_id, severity, message) "
        "values ('GEN-404', 'HIGH', 'vibration rising')"
    )
    state = build_features(select=["stg_equipment", "stg_alerts"], return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert "relationships_stg_alerts_equipment_id" in message


def test_an_ingest_run_builds_what_it_loaded_even_when_no_model_can_score(
    prefect_server, writer, db, tmp_path, monkeypatch
):
    """An ingest run builds the features of the readings it loaded, in the same run (its
    build-features subflow), before any model is promoted too: scoring fails, the features stay
    built and the run says why."""
    from emps.flows.ingest import ingest_sensor_drops
    from emps.ingest.landing import Landing
    from emps.settings import get_settings

    monkeypatch.setenv("EMPS_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/empty-registry.db")
    get_settings.cache_clear()
    try:
        insert_equipment(writer, [("GEN-7", first_type(), "alpha")])
        drop = series("GEN-7", datetime(2026, 3, 1, tzinfo=UTC), periods=12)
        incoming = Landing(get_settings().landing_dir).ensure().incoming
        drop.rename(columns={"ts": "timestamp"}).to_csv(incoming / "gen-7.csv", index=False)
        result = ingest_sensor_drops()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
        shutil.rmtree(db.landing_dir, ignore_errors=True)
    assert result["rows_loaded"] == 12
    assert result["features"]["builds"] == 1 and result["features"]["build_failed"] is None
    assert result["features"]["scored"] == 0
    assert "champion" in result["features"]["scoring_failed"]
    rows = writer.execute(
        "select count(*) from analytics.fct_equipment_features where equipment_id = 'GEN-7'"
    ).fetchone()
    assert rows[0] > 0


def test_the_feature_sql_passes_its_unit_tests(db, monkeypatch):
    """A build of the features runs every unit test the project declares (fixed rows in,
    expected rows out), and they pass; the other tests' builds skip them (tests/conftest.py)."""
    monkeypatch.delenv("DBT_EXCLUDE_RESOURCE_TYPES")
    declared = set()
    for path in (transform.DBT_PROJECT_DIR / "models").rglob("*.yml"):
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        declared |= {unit["name"] for unit in spec.get("unit_tests", [])}
    summary = transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=db)
    ran = {n.name: n.status for n in summary.nodes if n.resource_type == "unit_test"}
    assert declared and set(ran) == declared
    assert set(ran.values()) == {"pass"}


def test_builds_take_turns(writer, db):
    """A dbt build started while another one runs waits for it, then runs: two incremental
    builds at once would insert the same feature rows twice."""
    from emps.db import Role, connect

    messages: list[str] = []
    outcome: dict = {}

    def build() -> None:
        outcome["summary"] = transform.build(
            select=["stg_equipment"], settings=db, on_log=lambda _level, m: messages.append(m)
        )

    with connect(Role.OWNER, db, autocommit=True) as other:
        other.execute("select pg_advisory_lock(%s)", (transform.BUILD_LOCK_KEY,))
        waiting = threading.Thread(target=build)
        waiting.start()
        deadline = time.monotonic() + 60
        while "waiting for another dbt build to finish" not in messages:
            assert time.monotonic() < deadline, messages
            time.sleep(0.1)
        assert waiting.is_alive() and "summary" not in outcome
        other.execute("select pg_advisory_unlock(%s)", (transform.BUILD_LOCK_KEY,))
    waiting.join(300)
    assert outcome["summary"].success
    assert "stg_equipment" in [n.name for n in outcome["summary"].nodes]


def test_a_selected_build_leaves_the_dashboard_marts_readable(dashboard_marts, writer, db):
    """`emps dbt build --select stg_equipment` replaces the view every dashboard mart reads
    (dbt drops the old one with cascade): the build puts back the marts it took along, and
    the dashboard's reads still answer."""
    from emps.queries import DASHBOARD_MARTS

    insert_equipment(writer, [("GEN-1", first_type(), "alpha")])
    messages: list[str] = []
    summary = transform.build(
        select=["stg_equipment"], settings=db, on_log=lambda _level, m: messages.append(m)
    )
    assert "mart_equipment" in [n.name for n in summary.nodes]
    assert any(m.startswith("building again") and "mart_equipment" in m for m in messages)
    for mart in DASHBOARD_MARTS:
        writer.execute(f"select * from analytics.{mart} limit 1")  # noqa: S608
    equipment = writer.execute("select equipment_id from analytics.mart_equipment").fetchall()
    assert equipment == [("GEN-1",)]


def test_cli_builds_docs_site_offline(writer, db):
    """`emps dbt docs` writes one self-contained HTML page describing the feature table."""
    from emps.cli import app

    result = CliRunner().invoke(app, ["dbt", "docs"])
    assert result.exit_code == 0, result.output
    page = transform.dbt_paths(db)[0] / "static_index.html"
    assert page.exists()
    assert "fct_equipment_features" in page.read_text(encoding="utf-8")


def test_new_catalog_sensor_gets_features_without_edits(extra_sensor_catalog, writer, db):
    """A sensor added to the catalog (oil_quality) gets its reading and window features."""
    catalog = load_catalog(extra_sensor_catalog)
    settings = db.model_copy(update={"catalog_path": extra_sensor_catalog})
    migrate(settings, catalog)
    insert_equipment(writer, [("GEN-1", first_type(catalog), "alpha")])
    frame = series("GEN-1", datetime(2026, 3, 1, tzinfo=UTC), periods=12, catalog=catalog)
    insert_readings(writer, frame, catalog)
    writer.execute("update raw.sensor_readings set oil_quality = 105")
    try:
        transform.build(
            select=["+fct_equipment_features"],
            full_refresh=True,
            settings=settings,
            catalog=catalog,
        )
        rows = read_table(db, "select * from analytics.fct_equipment_features")
        # One reading per ten-minute slot, at the middle of the band: level 0.
        assert len(rows) == 12
        assert (rows["oil_quality_mean_w3"] == 0).all()
        assert {"oil_quality_slope_w2", "oil_quality_drift_lag"} <= set(rows.columns)
    finally:
        # Leave the session's feature table shaped by the default catalog for later tests.
        transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=db)


def test_a_start_rebuilds_features_built_by_older_definitions(writer, db):
    """After an upgrade changes the feature definitions, the next `emps up` rebuilds the stored
    history (an added feature would otherwise stay empty there); otherwise it leaves it alone."""
    insert_equipment(writer, [("GEN-1", first_type(), "alpha")])
    insert_readings(writer, series("GEN-1", datetime(2026, 3, 1, tzinfo=UTC), periods=12))
    transform.build(select=["+fct_equipment_features"], full_refresh=True, settings=db)
    column = f"{load_catalog().sensor_names[0]}_mean_w3"
    features = f"select ts, {column} from analytics.fct_equipment_features"  # noqa: S608
    assert transform.features_outdated(db) is None
    # What a build by an older version leaves: another fingerprint, a feature it lacked empty.
    writer.execute(f"update analytics.fct_equipment_features set {column} = null")  # noqa: S608
    assert not rebuild_outdated_features(db)
    assert read_table(db, features)[column].isna().all()
    writer.execute("comment on table analytics.fct_equipment_features is 'features 0123'")
    assert "changed since" in transform.features_outdated(db)
    assert rebuild_outdated_features(db)
    rows = read_table(db, features)
    assert len(rows) == 12 and rows[column].notna().all()
    assert transform.features_outdated(db) is None


def test_the_feature_fingerprint_follows_the_feature_models_lineage():
    """The fingerprint that tells `emps up` to rebuild stale feature history covers the feature
    model and every model upstream of it, wherever the project keeps them, and no dashboard view:
    changing one of those must not rebuild a fleet's whole feature history."""
    names = {path.stem for path in transform.feature_definition_files()}
    assert {"fct_equipment_features", "int_slot_levels", "stg_sensor_readings"} <= names
    assert "features" in names  # the macros the windows are computed by
    assert all(path.exists() for path in transform.feature_definition_files())
    assert not any(name.startswith("mart_") for name in names)


@pytest.mark.sqlfluff
def test_sql_passes_sqlfluff(db):
    """Every model passes sqlfluff (postgres dialect, dbt templater, repository .sqlfluff)."""
    env = {**os.environ, **transform.dbt_env(db)}
    result = subprocess.run(
        [sys.executable, "-m", "sqlfluff", "lint", "dbt_project"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
