"""ML fixtures: one real MLflow sqlite store per session, a registered model name per test, and
synthetic feature rows (shaped like the dbt contract) in a table of their own."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pytest
import synthetic

from emps.catalog import load_catalog
from emps.db import Role, connect
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
    """(training examples, failure events) for 40 equipment over 120 days, every 4 hours."""
    return synthetic.training_examples(load_catalog(settings.catalog_path))


@pytest.fixture
def ml_settings(db: Settings, mlflow_store: dict[str, object]) -> Settings:
    """Settings for one test: its own registered model name, small fast forests."""
    from ml.predict import forget_cached_models

    forget_cached_models()
    return db.model_copy(
        update={
            **mlflow_store,
            "model_name": f"equipment-failure-{uuid.uuid4().hex[:8]}",
            "ml_n_estimators": 20,
            "ml_n_jobs": 1,
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


def load_examples(frame: pd.DataFrame, settings: Settings, relation: str = TEST_RELATION) -> None:
    """Replace `relation` with `frame` and register its equipment in raw.equipment."""
    schema, table = relation.split(".")
    columns = []
    for name, dtype in frame.dtypes.items():
        if name in ("equipment_id", "equipment_type", "site"):
            kind = "text"
        elif name in ("ts", "next_failure_at"):
            kind = "timestamptz"
        elif pd.api.types.is_bool_dtype(dtype):
            kind = "boolean"
        else:
            kind = "double precision"
        columns.append(
            psycopg.sql.SQL("{} {}").format(psycopg.sql.Identifier(name), psycopg.sql.SQL(kind))
        )
    target = psycopg.sql.Identifier(schema, table)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S%z")
    with connect(Role.OWNER, settings) as conn:
        conn.execute(
            psycopg.sql.SQL("create schema if not exists {}").format(psycopg.sql.Identifier(schema))
        )
        conn.execute(psycopg.sql.SQL("drop table if exists {}").format(target))
        conn.execute(
            psycopg.sql.SQL("create table {} ({})").format(
                target, psycopg.sql.SQL(", ").join(columns)
            )
        )
        conn.execute(psycopg.sql.SQL("create index on {} (equipment_id, ts)").format(target))
        conn.execute(
            psycopg.sql.SQL("grant usage on schema {} to emps_writer").format(
                psycopg.sql.Identifier(schema)
            )
        )
        conn.execute(psycopg.sql.SQL("grant select on {} to emps_writer").format(target))
        with conn.cursor().copy(
            psycopg.sql.SQL("copy {} from stdin with (format csv)").format(target)
        ) as copy:
            copy.write(buffer.getvalue())
        equipment = frame.drop_duplicates("equipment_id")
        conn.cursor().executemany(
            "insert into raw.equipment (equipment_id, equipment_type, site) values (%s, %s, %s) "
            "on conflict do nothing",
            list(equipment[["equipment_id", "equipment_type", "site"]].itertuples(index=False)),
        )


@pytest.fixture
def examples_in_db(ml_settings: Settings, synthetic_examples) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The synthetic examples as this test's feature/example table."""
    examples, failures = synthetic_examples
    load_examples(examples, ml_settings)
    return examples, failures
