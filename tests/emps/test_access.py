"""Access to the database: passwords on every connection, each role limited to its stage, the
audit log append-only, the generated secrets private and rotatable."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from emps.credentials import SecretsError, load_secrets, secrets_path
from emps.db import PREFECT_ROLE, Role, connect, database_url, embedded_server
from emps.embedded_pg import HBA, EmbeddedPostgres
from emps.processes import free_port

PIPELINE = (Role.WRITER, Role.INGEST, Role.SCORING, Role.ALERTING)


def _refused(role: Role, settings, statement: str, params: tuple = ()) -> None:
    with connect(role, settings) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(statement, params)


@pytest.fixture
def alert_and_notification(db) -> tuple[int, int]:
    with connect(Role.OWNER, db) as conn:
        conn.execute("insert into raw.equipment values ('GEN-0900', 'generator', 'ALPHA')")
        alert = conn.execute(
            "insert into ops.alerts (equipment_id, severity, message) "
            "values ('GEN-0900', 'CRITICAL', 'bearing') returning id"
        ).fetchone()[0]
        note = conn.execute(
            "insert into ops.notifications (alert_id, channel, recipient, body_text, dedupe_key) "
            "values (%s, 'sms', '+15550100001', 'call the crew', 'k-1') returning id",
            (alert,),
        ).fetchone()[0]
        conn.execute(
            "insert into ops.audit_log (actor, action, details) values ('tech', 'alert.x', %s)",
            (Jsonb({}),),
        )
    return alert, note


@pytest.mark.parametrize("user", ["postgres", "emps_reader", "emps_writer", PREFECT_ROLE])
def test_a_connection_without_the_password_is_refused(database, user):
    """Nobody connects to the embedded server without a password, the superuser included, over
    TCP or the Unix socket; a wrong password is refused too."""
    settings = database
    server = embedded_server(settings)
    for host in (settings.database.pg_host, str(server.pgdata)):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host=host, port=settings.database.pg_port, user=user, dbname="postgres")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host=settings.database.pg_host,
            port=settings.database.pg_port,
            user=user,
            dbname="postgres",
            password="not-the-password",
        )
    assert (server.pgdata / "pg_hba.conf").read_text() == HBA


def test_the_secrets_file_is_private(database):
    """The generated passwords live in a file only its owner can read; a file others can read
    is refused with what to do."""
    path = secrets_path(database)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    try:
        with pytest.raises(SecretsError, match="chmod 600"):
            load_secrets(database.model_copy(update={"home": path.parent / "elsewhere"}))
    finally:
        path.chmod(0o600)


def test_the_dashboard_reads_no_contact_details_and_writes_nothing(db, alert_and_notification):
    """The dashboard's reader sees delivery states without recipients or texts, and neither
    dashboard role can write a table or change the audit log."""
    alert, _ = alert_and_notification
    with connect(Role.READER, db) as conn:
        row = conn.execute("select * from ops.notification_deliveries").fetchone()
        names = [
            c.name for c in conn.execute("select * from ops.notification_deliveries").description
        ]
        assert row is not None
        assert not {"recipient", "body_text", "body_html", "subject", "last_error"} & set(names)
    for column in ("recipient", "body_text", "last_error"):
        _refused(Role.READER, db, f"select {column} from ops.notifications")  # noqa: S608
    for role in (Role.READER, Role.OPERATOR):
        for statement in (
            "update ops.alerts set status = 'resolved'",
            "insert into ops.audit_log (actor, action) values ('x', 'y')",
            "update ops.audit_log set actor = 'nobody'",
            "delete from ops.audit_log",
            "update ops.thresholds set value = 0.99",
            "select ops.resolve_alert(1, 'tech')",
        ):
            _refused(role, db, statement)
    with connect(Role.OWNER, db) as conn:
        status = conn.execute("select status from ops.alerts where id = %s", (alert,)).fetchone()
    assert status == ("open",)


@pytest.mark.parametrize("role", PIPELINE, ids=lambda r: r.value)
def test_no_pipeline_role_can_alter_the_audit_log(db, alert_and_notification, role):
    """The audit log is append-only: no pipeline role updates, deletes or inserts rows itself."""
    for statement in (
        "update ops.audit_log set actor = 'nobody'",
        "delete from ops.audit_log",
        "truncate ops.audit_log",
        "insert into ops.audit_log (actor, action) values ('admin', 'user.create')",
    ):
        _refused(role, db, statement)


def test_pipeline_roles_audit_as_the_system_never_as_a_person(db, alert_and_notification):
    """A stage records what it did as a system actor; naming a person, in the audit log or a
    lifecycle function, is refused."""
    alert, _ = alert_and_notification
    with connect(Role.ALERTING, db) as conn:
        conn.execute(
            "select ops.record_audit('emps-alerts', 'alert.note', 'alert', %s)", (str(alert),)
        )
    _refused(Role.ALERTING, db, "select ops.record_audit('admin', 'user.create', 'user')")
    _refused(Role.ALERTING, db, "select ops.resolve_alert(%s, 'admin', 'fixed')", (alert,))
    _refused(Role.ALERTING, db, "select ops.acknowledge_alert(%s, 'emps-alerts')", (alert,))
    with connect(Role.ALERTING, db) as conn:
        conn.execute("select ops.resolve_alert(%s, 'emps-auto-resolve', 'healthy')", (alert,))
    with connect(Role.OWNER, db) as conn:
        actors = [r[0] for r in conn.execute("select actor from ops.audit_log order by id")]
    assert actors == ["tech", "emps-alerts", "emps-auto-resolve"]


def test_each_stage_writes_only_its_own_tables(db, alert_and_notification):
    """dbt's role writes no raw or ops table; ingest writes no prediction or alert; scoring no
    reading or alert; alerting no reading or prediction."""
    now = datetime.now(UTC)
    reading = ("insert into raw.sensor_readings (equipment_id, ts) values ('GEN-0900', %s)", (now,))
    prediction = (
        "insert into ops.predictions (equipment_id, ts, failure_probability, health_score, "
        "severity, model_version) values ('GEN-0900', %s, 0.9, 10, 'CRITICAL', '1')",
        (now,),
    )
    alert = (
        "insert into ops.alerts (equipment_id, severity, message, failure_mode) "
        "values ('GEN-0900', 'HIGH', 'x', 'seal')",
        (),
    )
    for role, forbidden in (
        (Role.WRITER, [reading, prediction, alert]),
        (Role.INGEST, [prediction, alert]),
        (Role.SCORING, [reading, alert]),
        (Role.ALERTING, [reading, prediction]),
    ):
        for statement, params in forbidden:
            _refused(role, db, statement, params)
    for role, (statement, params) in (
        (Role.INGEST, reading),
        (Role.SCORING, prediction),
        (Role.ALERTING, alert),
    ):
        with connect(role, db) as conn:
            conn.execute(statement, params)
    _refused(Role.INGEST, db, "select recipient from ops.notifications")
    _refused(Role.WRITER, db, "select * from sim.equipment_truth")


def test_partition_functions_only_touch_the_partitioned_tables_and_the_past(db):
    """Retiring partitions works only on readings and predictions and only before a past
    moment; creating them only up to 25 months ahead."""
    now = datetime.now(UTC)
    with connect(Role.ALERTING, db) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only"):
            conn.execute("select ops.retire_month_partitions('ops.alerts', %s)", (now,))
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="in the past"):
            conn.execute(
                "select ops.retire_month_partitions('raw.sensor_readings', %s, 'drop')",
                (now + timedelta(days=400),),
            )
        conn.rollback()
        conn.execute(
            "select ops.retire_month_partitions('raw.sensor_readings', %s, 'detach')",
            (now - timedelta(days=3650),),
        )
    with connect(Role.INGEST, db) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select ops.ensure_month_partitions('ops.users', %s, %s)", (now, now))
        conn.rollback()
        with pytest.raises(psycopg.errors.CheckViolation, match="25 months"):
            conn.execute(
                "select ops.ensure_month_partitions('raw.sensor_readings', %s, %s)",
                (now, now + timedelta(days=31 * 40)),
            )
    _refused(
        Role.SCORING,
        db,
        "select ops.ensure_month_partitions('raw.sensor_readings', now(), now())",
    )


def test_prefect_has_its_own_database_and_role(database):
    """Prefect's role reaches only Prefect's database; the platform's roles cannot reach it."""
    from emps.db import PREFECT_DATABASE, ensure_prefect_database, prefect_database_url

    ensure_prefect_database(database)
    url = prefect_database_url(database).replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(url) as conn:
        assert conn.execute("select current_user").fetchone() == (PREFECT_ROLE,)
        assert not conn.execute(
            "select rolsuper from pg_roles where rolname = current_user"
        ).fetchone()[0]
    platform = url.rsplit("/", 1)[0] + f"/{database.database.pg_database}"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(platform)
    reader = database_url(Role.READER, database).rsplit("/", 1)[0] + f"/{PREFECT_DATABASE}"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(reader)


# What initdb --auth-local=trust --auth-host=trust wrote for releases before the passwords.
TRUST_HBA = (
    "local   all   all                  trust\n"
    "host    all   all   127.0.0.1/32   trust\n"
    "host    all   all   ::1/128        trust\n"
)


def test_an_old_trusting_data_directory_requires_passwords_after_its_next_start(tmp_path):
    """A data directory made with trust authentication and no superuser password gets the
    password and scram-sha-256 at its next start: without the password nothing connects, with
    it the old data is there."""
    pgdata, port = tmp_path / "pg" / "data", free_port()
    old = EmbeddedPostgres(pgdata, port=port, superuser_password="set-only-to-build-it")
    old.init()
    old.start()
    with psycopg.connect(old.admin_url(), autocommit=True) as conn:
        conn.execute("create table kept (x int)")
        conn.execute("insert into kept values (42)")
        conn.execute("alter role postgres password null")
    old.stop()
    (old.pgdata / "pg_hba.conf").write_text(TRUST_HBA)
    server = EmbeddedPostgres(pgdata, port=port, superuser_password="the-new-superuser-password")
    try:
        server.start()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        with psycopg.connect(server.admin_url()) as conn:
            assert conn.execute("select x from kept").fetchone() == (42,)
        assert (server.pgdata / "pg_hba.conf").read_text() == HBA
    finally:
        server.stop(mode="immediate")


def test_rotate_replaces_every_password_and_refuses_while_emps_up_runs(tmp_path, monkeypatch):
    """`emps secrets rotate` gives every role a new password on the embedded server and in the
    file (still 0600): the old ones stop working. While `emps up` runs it changes nothing."""
    from typer.testing import CliRunner

    from emps.cli import app
    from emps.credentials import forget_cached
    from emps.migrate import migrate
    from emps.settings import get_settings
    from emps.supervisor import _take_lock

    home = tmp_path / "home"
    monkeypatch.setenv("EMPS_HOME", str(home))
    monkeypatch.setenv("EMPS_SECRETS_PATH", str(home / "secrets.json"))
    monkeypatch.setenv("EMPS_PG_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    server = embedded_server(settings)
    server.start()
    try:
        migrate(settings)
        before = load_secrets(settings)
        old_reader = database_url(Role.READER, settings)
        lock = _take_lock(settings)
        refused = CliRunner().invoke(app, ["secrets", "rotate"])
        lock.close()
        assert refused.exit_code == 1 and "stop `emps up`" in refused.output
        assert load_secrets(settings) == before
        rotated = CliRunner().invoke(app, ["secrets", "rotate"])
        assert rotated.exit_code == 0, rotated.output
        forget_cached()
        after = load_secrets(settings)
        assert all(after.database[r] != before.database[r] for r in before.database)
        assert after.prefect_auth != before.prefect_auth and after.mlflow_auth != before.mlflow_auth
        assert stat.S_IMODE(secrets_path(settings).stat().st_mode) == 0o600
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(old_reader)
        with connect(Role.READER, settings) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        server = embedded_server(settings)  # the superuser's new password
    finally:
        server.stop(mode="immediate")
        get_settings.cache_clear()
        forget_cached()


def test_emps_commands_talking_to_the_local_prefect_send_its_credential(settings, monkeypatch):
    """An `emps` command run with PREFECT_API_URL naming this platform's Prefect server (and no
    credential of its own) is given the server's auth string; one naming another server is not."""
    import os

    from typer.testing import CliRunner

    from emps.cli import app

    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.elsewhere.example/api")
    assert CliRunner().invoke(app, ["config", "show"]).exit_code == 0
    assert "PREFECT_API_AUTH_STRING" not in os.environ
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{settings.services.prefect_port}/api")
    assert CliRunner().invoke(app, ["config", "show"]).exit_code == 0
    assert os.environ["PREFECT_API_AUTH_STRING"] == load_secrets(settings).prefect_auth
