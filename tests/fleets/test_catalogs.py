"""Catalogs unlike the built-in fleet's, built only from their YAML: a run-to-failure fleet of
engines on a cycle clock with operating regimes and no sites, and an hourly fleet of two types
with their own sensors and sites on only some machines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
from generator import hourly, run_to_failure, with_derived_time

from emps import transform
from emps.catalog import CatalogError, load_catalog, parse_catalog
from emps.db import Role, connect
from emps.migrate import migrate
from emps.ml.dataset import feature_columns

HERE = Path(__file__).parent
RTOL, ATOL = 1e-6, 1e-8


def fleet_database(settings, name: str):
    """Settings for a database of its own on the session's server, migrated for the catalog."""
    catalog_path = HERE / f"{name}.yaml"
    fleet_settings = settings.replace(
        catalog_path=catalog_path, database={"pg_database": f"emps_fleet_{name}"}
    )
    migrate(fleet_settings, load_catalog(catalog_path))
    with connect(Role.OWNER, fleet_settings, autocommit=True) as conn:
        conn.execute(
            "truncate raw.sensor_readings, raw.failure_events, raw.equipment, "
            "raw.operating_regimes restart identity cascade"
        )
        # A clean analytics schema, with the privileges the migrations gave the first one.
        conn.execute("drop schema if exists analytics cascade")
        conn.execute("create schema analytics authorization emps_writer")
        conn.execute(
            "grant usage on schema analytics to emps_reader, emps_ingest, emps_scoring, "
            "emps_alerting"
        )
        conn.execute(
            "alter default privileges for role emps_writer in schema analytics "
            "grant select on tables to emps_reader"
        )
    return fleet_settings


def load(settings, equipment: pd.DataFrame, readings: pd.DataFrame) -> None:
    catalog = load_catalog(settings.catalog_path)
    columns = [
        "equipment_id",
        "ts",
        *[c for c in ("cycle", *catalog.channel_names) if c in readings],
    ]
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.cursor().executemany(
            "insert into raw.equipment (equipment_id, equipment_type, site, commissioned_at) "
            "values (%s, %s, %s, %s)",
            [
                tuple(None if pd.isna(v) else v for v in row)
                for row in equipment.itertuples(index=False)
            ],
        )
        statement = psycopg.sql.SQL("copy raw.sensor_readings ({}) from stdin").format(
            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, columns))
        )
        with conn.cursor().copy(statement) as copy:
            for row in readings[columns].itertuples(index=False):
                copy.write_row([None if isinstance(v, float) and np.isnan(v) else v for v in row])


def read(settings, query: str) -> pd.DataFrame:
    with connect(Role.OWNER, settings) as conn, conn.cursor() as cur:
        cur.execute(query)
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    if "ts" in frame:
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def assert_matches_reference(settings, readings, equipment) -> pd.DataFrame:
    from feature_reference import reference_features

    catalog = load_catalog(settings.catalog_path)
    regimes = read(
        settings, "select equipment_type, regime, setting, centre, scale from raw.operating_regimes"
    )
    expected = reference_features(readings, equipment, catalog, regimes)
    actual = read(settings, "select * from analytics.fct_equipment_features")
    merged = expected.merge(actual, on=["equipment_id", "slot"], suffixes=("_pd", "_dbt"))
    assert len(merged) == len(expected) == len(actual)
    for column in catalog.feature_names():
        np.testing.assert_allclose(
            merged[f"{column}_dbt"].astype(float),
            merged[f"{column}_pd"].astype(float),
            rtol=RTOL,
            atol=ATOL,
            err_msg=column,
        )
    return actual


def test_run_to_failure_engines_on_a_cycle_clock(database):
    """Engines read once per cycle, with three settings in several flight regimes and no site:
    regimes are found from the settings, every dbt model and test builds, features equal an
    independent computation, the model's features are the catalog's list, and the wear since
    new (a cycle clock's default baseline is the first span) tells held-out engines' last
    horizon from their earlier cycles."""
    settings = fleet_database(database, "turbofan")
    catalog = load_catalog(settings.catalog_path)
    assert catalog.equipment_types["turbofan"].features.baseline_lag is None
    fleet = run_to_failure(catalog, "turbofan", engines=10, seed=3)
    readings = with_derived_time(fleet, catalog)
    load(settings, fleet.equipment, readings)
    transform.build(full_refresh=True, settings=settings, catalog=catalog)

    regimes = read(settings, "select distinct regime from raw.operating_regimes")
    assert len(regimes) == 6  # the generator flies six regimes
    actual = assert_matches_reference(settings, readings, fleet.equipment)
    assert len(actual) == len(readings)  # one slot per cycle
    assert actual["fan_inlet_temp_site_drift_lag"].isna().all()  # no sites
    # Levels are normalised per regime: the regimes' effect is gone from the sensors.
    assert actual["hpc_outlet_temp_now"].abs().median() < 2
    # Wear shows: the last cycles drift from the engine's first cycles.
    last = actual.sort_values("slot").groupby("equipment_id").tail(1)
    assert (last[[f"{s}_drift_lag" for s in catalog.sensor_names]].abs().max(axis=1) > 1).all()
    assert feature_columns(actual.columns, catalog) == catalog.feature_names()
    assert not {"cycle", "altitude", "mach", "throttle"} & set(catalog.feature_names())
    assert held_out_auc(actual, fleet.failures, catalog) > 0.95


def held_out_auc(features: pd.DataFrame, failures: pd.DataFrame, catalog) -> float:
    """ROC AUC, on the last three engines, of a small forest trained on the others to tell the
    cycles within the horizon of a failure from the earlier ones."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    horizon = catalog.equipment_types["turbofan"].features.horizon
    life = failures.set_index("equipment_id")["cycle"]
    rows = features.assign(
        soon=lambda f: life[f["equipment_id"]].to_numpy() - f["slot"] <= horizon
    ).dropna(subset=[f"{s}_drift_lag" for s in catalog.sensor_names])
    names = catalog.feature_names()
    test = rows["equipment_id"].isin(sorted(life.index)[-3:])
    model = RandomForestClassifier(n_estimators=50, min_samples_leaf=3, random_state=0)
    model.fit(rows.loc[~test, names].fillna(0), rows.loc[~test, "soon"])
    scores = model.predict_proba(rows.loc[test, names].fillna(0))[:, 1]
    return float(roc_auc_score(rows.loc[test, "soon"], scores))


def test_hourly_fleet_with_two_types_and_some_sites(database):
    """Two types with different sensors and slot widths, one with healthy bands and one
    learning its norms, sites on some machines only: every dbt model and test builds, features
    equal an independent computation, site features only where there is a site."""
    settings = fleet_database(database, "hourly")
    catalog = load_catalog(settings.catalog_path)
    fleet = hourly(catalog, machines_per_type=4, days=8, seed=5)
    load(settings, fleet.equipment, fleet.readings)
    transform.build(full_refresh=True, settings=settings, catalog=catalog)

    actual = assert_matches_reference(settings, fleet.readings, fleet.equipment)
    sited = actual["site"].notna()
    assert actual.loc[~sited, "coolant_temp_site_drift_lag"].isna().all()
    assert actual.loc[sited, "coolant_temp_site_drift_lag"].notna().any()
    # Each type only has its own sensors.
    pumps = actual["equipment_type"] == "feeder_pump"
    assert actual.loc[pumps, "motor_current_now"].isna().all()
    assert actual.loc[~pumps, "flow_rate_now"].isna().all()
    assert feature_columns(actual.columns, catalog) == catalog.feature_names()


@pytest.mark.parametrize("name", ["days", "fails_soon", "site", "cycle"])
def test_a_channel_named_like_a_label_or_a_pipeline_column_is_refused(name):
    """A catalog declaring a channel `days` (a label would become a feature) is refused with
    the line and the reason."""
    text = (HERE / "hourly.yaml").read_text().replace("flow_rate", name)
    with pytest.raises(CatalogError) as refused:
        parse_catalog(text, Path("fleet.yaml"))
    message = str(refused.value)
    assert message.startswith("fleet.yaml line ")
    assert f"'{name}' is reserved" in message


def test_a_bad_grid_is_refused_with_its_line_and_field():
    """A window that is not a whole number of slots names the file, line and field."""
    text = (HERE / "hourly.yaml").read_text().replace("slot: 2 h", "slot: 4 h")
    with pytest.raises(CatalogError) as refused:
        parse_catalog(text, Path("fleet.yaml"))
    lines = text.splitlines()
    pump = next(i for i, row in enumerate(lines) if row.strip() == "feeder_pump:")
    line = next(i for i, row in enumerate(lines[pump:], pump + 1) if "windows:" in row)
    assert str(refused.value).startswith(f"fleet.yaml line {line}: ")
    assert "equipment_types.feeder_pump.features.windows[0]: '6 h'" in str(refused.value)


def test_the_baseline_lag_defaults_by_clock_and_may_be_set():
    """Without a baseline_lag a wall-time type's baseline trails its slots by two failure
    horizons and a counter-clocked type keeps its first span; a declared lag is used in slots,
    `first` keeps the first span, and a lag that is not a whole number of slots is refused with
    its line and field."""
    text = (HERE / "hourly.yaml").read_text()
    catalog = parse_catalog(text, Path("fleet.yaml"))
    assert (
        catalog.equipment_types["feeder_pump"].features.baseline_lag == 120
    )  # 2 x 5 d of 2 h slots
    assert catalog.equipment_types["feeder_pump"].baseline_label == "2 d ending 10 d back"

    def with_lag(lag: str) -> str:
        return text.replace(
            "      baseline: 48 h\n      baseline_min_slots: 12",
            f"      baseline: 48 h\n      baseline_lag: {lag}\n      baseline_min_slots: 12",
        )

    declared = parse_catalog(with_lag("12 h"), Path("fleet.yaml"))
    assert declared.equipment_types["feeder_pump"].features.baseline_lag == 6
    first = parse_catalog(with_lag("first"), Path("fleet.yaml"))
    assert first.equipment_types["feeder_pump"].features.baseline_lag is None
    assert first.equipment_types["feeder_pump"].baseline_label == "first 2 d"
    with pytest.raises(CatalogError) as refused:
        parse_catalog(with_lag("3 h"), Path("fleet.yaml"))
    assert "equipment_types.feeder_pump.features.baseline_lag: '3 h'" in str(refused.value)

    engines = (HERE / "turbofan.yaml").read_text()
    turbofan = parse_catalog(engines, Path("fleet.yaml")).equipment_types["turbofan"]
    assert turbofan.features.baseline_lag is None
    assert turbofan.baseline_label == "first 20 cycles"
    trailing = parse_catalog(
        engines.replace("      baseline: 20\n", "      baseline: 20\n      baseline_lag: 60\n"),
        Path("fleet.yaml"),
    ).equipment_types["turbofan"]
    assert trailing.features.baseline_lag == 60
    assert trailing.baseline_label == "20 cycles ending 60 cycles back"
