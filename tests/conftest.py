"""Shared test fixtures: one embedded PostgreSQL per test session, never touching var/."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from emps.processes import free_port
from emps.settings import PROJECT_ROOT, Settings, get_settings
from emps.transform import keep_parsed_manifests


def pytest_configure(config: pytest.Config) -> None:
    """A test worker runs hundreds of dbt builds, each with its own vars or home: it parses each
    project once (the platform's flow runs, a process per run, parse each time)."""
    keep_parsed_manifests()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole-platform tests (tests/e2e, minutes long) first: under `make test`'s two workers
    they then run beside the others instead of alone at the end."""
    items.sort(key=lambda item: "e2e" not in item.path.parts)


@pytest.fixture(scope="session")
def test_home() -> Iterator[Path]:
    """A private EMPS_HOME for the whole session; the environment points every setting at it."""
    home = Path(tempfile.mkdtemp(prefix="emps-test-"))
    saved = {k: v for k, v in os.environ.items() if k.startswith("EMPS_")}
    for key in saved:
        del os.environ[key]
    os.environ["EMPS_HOME"] = str(home)
    # The session's database passwords, also for tests that point EMPS_HOME elsewhere.
    os.environ["EMPS_SECRETS_PATH"] = str(home / "secrets.json")
    os.environ["EMPS_ENV"] = "ci"
    os.environ["EMPS_PG_PORT"] = str(free_port())
    os.environ["EMPS_CATALOG_PATH"] = str(PROJECT_ROOT / "catalog" / "sensors.yaml")
    # Ingest runs end once incoming/ is empty instead of lingering for the next minute's drops
    # (tests/ingest/test_flow_and_cli.py covers lingering).
    os.environ["EMPS_INGEST_LINGER_S"] = "0"
    # Test files are complete when dropped: claimed at once, not after settling
    # (tests/ingest/test_landing.py covers settling).
    os.environ["EMPS_INGEST_SETTLE_S"] = "0"
    # dbt's unit tests check the SQL, not the data: one test runs them
    # (tests/dbt/test_dbt_project.py), the hundreds of builds the others make skip them.
    os.environ["DBT_EXCLUDE_RESOURCE_TYPES"] = "unit_test"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    get_settings.cache_clear()
    yield home
    os.environ.update(saved)
    get_settings.cache_clear()
    # The session's PostgreSQL has stopped by now (its fixture depends on this one): the home
    # of a session holds up to half a gigabyte.
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def settings(test_home: Path) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def database(settings: Settings) -> Iterator[Settings]:
    """The session's PostgreSQL, migrated with the default catalog."""
    from emps.db import embedded_server
    from emps.migrate import migrate

    server = embedded_server(settings)
    server.start()
    migrate(settings)
    yield settings
    server.stop(mode="immediate")


RESET_TABLES = (
    "ops.archive_files",
    "ops.archived_alerts",
    "ops.ingest_daily",
    "ops.predictions_hourly",
    "ops.operations_alerts",
    "ops.reading_corrections",
    "raw.landing_ignored",
    "ops.notifications",
    "ops.maintenance_tasks",
    "ops.alerts",
    "ops.predictions",
    "ops.model_promotions",
    "ops.audit_log",
    "ops.auth_tokens",
    "ops.sign_in_attempts",
    "raw.quarantined_rows",
    "raw.ingest_files",
    "raw.sensor_readings",
    "raw.failure_events",
    "raw.equipment",
)


@pytest.fixture
def db(database: Settings) -> Iterator[Settings]:
    """The session database emptied of data before the test (schema kept)."""
    from emps.db import Role, database_url

    with psycopg.connect(database_url(Role.OWNER, database), autocommit=True) as conn:
        conn.execute(f"truncate {', '.join(RESET_TABLES)} restart identity cascade")
    yield database


@pytest.fixture
def dashboard_marts(database: Settings) -> Settings:
    """The marts the dashboard, the API and the daily report read, built by the dbt project
    when any is missing: with everything under them once a worker, then again alone after
    a test ran dbt itself over a view under them (dbt drops the view it replaces with cascade,
    and the marts with it; only `transform.build` puts them back)."""
    from emps.db import Role, connect
    from emps.queries import DASHBOARD_MARTS
    from emps.transform import dbt_args, run_dbt

    with connect(Role.OWNER, database) as conn:
        missing = conn.execute(
            "select count(*) from unnest(%s::text[]) as mart "
            "where to_regclass('analytics.' || mart) is null",
            (list(DASHBOARD_MARTS),),
        ).fetchone()[0]
    if missing:
        summary = run_dbt(dbt_args(["run"], database, select=list(DASHBOARD_MARTS)), database)
        if not summary.success:  # the models under them not built yet either
            selection = [f"+{mart}" for mart in DASHBOARD_MARTS]
            summary = run_dbt(dbt_args(["run"], database, select=selection), database)
        assert summary.success, summary.describe_failures()
    return database


@pytest.fixture
def owner_conn(db: Settings) -> Iterator[psycopg.Connection]:
    from emps.db import Role, connect

    with connect(Role.OWNER, db, autocommit=True) as conn:
        yield conn


@pytest.fixture
def admin(db: Settings):
    """A signed-in dashboard Admin who may set thresholds; the bands are their seeds before and
    after."""
    from emps.db import Role, connect
    from emps.migrate import seed_thresholds
    from emps.users import add_user, sign_in

    def reset() -> None:
        with connect(Role.OWNER, db) as conn:
            conn.execute("update ops.thresholds set updated_by = 'migration'")
            seed_thresholds(conn, db)
            conn.execute("delete from ops.users where username = 'thresholds-admin'")

    reset()
    with connect(Role.OWNER, db, autocommit=True) as conn:
        add_user(conn, "thresholds-admin", "Admin", "a long enough password", rounds=4)
    yield sign_in("thresholds-admin", "a long enough password", settings=db)  # holds a session
    reset()


@pytest.fixture
def extra_sensor_catalog(tmp_path: Path, settings: Settings) -> Path:
    """A copy of the default catalog with one more sensor, `oil_quality` (ppm)."""
    import yaml

    spec = yaml.safe_load(Path(settings.catalog_path).read_text())
    spec["channels"]["oil_quality"] = {"unit": "ppm", "valid_range": [0, 5000], "required": False}
    for etype in spec["equipment_types"].values():
        etype["channels"]["oil_quality"] = [10, 200]
    path = tmp_path / "sensors.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def prefect_server(test_home: Path, settings: Settings) -> Iterator[str]:
    """One Prefect test server for the session (it takes ~20 s to start), requiring the auth
    string and CSRF tokens as `emps up`'s does; yields its API URL. This process and the
    subprocesses tests start (which copy os.environ) send the credential."""
    from emps.credentials import load_secrets
    from emps.supervisor import prefect_server_env

    os.environ["PREFECT_HOME"] = str(test_home / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    auth = {**prefect_server_env(settings), "PREFECT_API_AUTH_STRING": load_secrets().prefect_auth}
    os.environ.update(auth)
    import prefect.settings
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    updates = {getattr(prefect.settings, name): value for name, value in auth.items()}
    with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=300):
        yield PREFECT_API_URL.value()
