"""The schema: migrations, catalog-driven columns, partitions and roles."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import psycopg
import pytest

from emps.actions import set_threshold
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.embedded_pg import EmbeddedPostgres
from emps.migrate import (
    MIGRATIONS_DIR,
    _apply_versioned,
    discover_migrations,
    migrate,
    schema_text,
)
from emps.processes import free_port


def sensor_columns(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "select column_name from information_schema.columns "
        "where table_schema = 'raw' and table_name = 'sensor_readings'"
    )
    return {r[0] for r in rows}


def test_every_catalog_sensor_is_a_column(owner_conn):
    """Each sensor in the default catalog is a column of raw.sensor_readings."""
    assert set(load_catalog().sensor_names) <= sensor_columns(owner_conn)


def test_migrate_is_rerunnable(db):
    """A second migrate applies nothing, adds nothing and keeps existing data."""
    with connect(Role.INGEST, db) as conn:
        conn.execute("insert into raw.equipment values ('GEN-0001', 'generator', 'ALPHA')")
    report = migrate(db)
    assert report.applied == []
    assert report.sensor_columns_added == []
    with connect(Role.READER, db) as conn:
        assert conn.execute("select count(*) from raw.equipment").fetchone()[0] == 1


def bands(settings) -> dict[str, tuple[float, str]]:
    with connect(Role.READER, settings) as conn:
        rows = conn.execute("select key, value, updated_by from ops.thresholds").fetchall()
    return {key: (value, by) for key, value, by in rows}


def test_configured_bands_hold_until_an_admin_sets_one(db, admin):
    """EMPS_SEVERITY_* set the bands in force at each migrate, except one an admin has set."""
    migrate(db.replace(thresholds={"severity_high": 0.7, "severity_critical": 0.9}))
    assert bands(db)["severity_high"] == (0.7, "migration")
    assert bands(db)["severity_critical"] == (0.9, "migration")
    set_threshold(admin, "severity_high", 0.65, db)
    migrate(db.replace(thresholds={"severity_high": 0.75}))
    assert bands(db)["severity_high"] == (0.65, admin.username)
    assert bands(db)["severity_critical"] == (db.thresholds.severity_critical, "migration")
    # A configured MEDIUM above the admin's HIGH would break the order: nothing changes.
    migrate(db.replace(thresholds={"severity_medium": 0.66, "severity_critical": 0.95}))
    assert bands(db)["severity_medium"] == (db.thresholds.severity_medium, "migration")
    assert bands(db)["severity_critical"] == (db.thresholds.severity_critical, "migration")


def test_extra_catalog_sensor_becomes_a_column(
    db, extra_sensor_catalog: Path, owner_conn, tmp_path: Path
):
    """Adding a sensor to the catalog and migrating creates its column and mirrors its range."""
    # A sensor name no other test adds (the dbt tests add oil_quality and build views on it).
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(extra_sensor_catalog.read_text().replace("oil_quality", "coolant_level"))
    catalog = load_catalog(renamed)
    report = migrate(db, catalog)
    try:
        assert report.sensor_columns_added == ["coolant_level"]
        assert "coolant_level" in sensor_columns(owner_conn)
        row = owner_conn.execute(
            "select unit, valid_max from raw.sensor_catalog where sensor = 'coolant_level'"
        ).fetchone()
        assert row == ("ppm", 5000)
    finally:
        owner_conn.execute("alter table raw.sensor_readings drop column if exists coolant_level")
        migrate(db)


def test_reading_for_a_new_month_lands_in_its_partition(db, owner_conn):
    """Partitions exist ahead of now; a month past them goes to default, then moves to its own."""
    parts = {
        r[0]
        for r in owner_conn.execute(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
            "where i.inhparent = 'raw.sensor_readings'::regclass"
        )
    }
    from datetime import UTC, datetime, timedelta

    ahead = datetime.now(UTC) + timedelta(days=62)
    assert f"sensor_readings_y{ahead:%Y}m{ahead:%m}" in parts

    later = (datetime.now(UTC).replace(day=1) + timedelta(days=32 * 20)).replace(day=3)
    month = f"sensor_readings_y{later:%Y}m{later:%m}"
    assert month not in parts
    with connect(Role.INGEST, db) as conn:
        conn.execute("insert into raw.equipment values ('GEN-0001', 'generator', 'ALPHA')")
        conn.execute(
            "insert into raw.sensor_readings (equipment_id, ts, temperature) "
            "values ('GEN-0001', %s, 80)",
            (later,),
        )
        conn.commit()
        where = conn.execute("select tableoid::regclass::text from raw.sensor_readings").fetchone()
        assert where[0] == "raw.sensor_readings_default"
        conn.execute(
            "select ops.ensure_month_partitions('raw.sensor_readings', %s, %s)", (later, later)
        )
        conn.commit()
        where = conn.execute("select tableoid::regclass::text from raw.sensor_readings").fetchone()
        assert where[0] == f"raw.{month}"
    owner_conn.execute(f"drop table raw.{month}")


def test_reader_role_cannot_write(db):
    """The dashboard's read-only role can read every schema but not insert, update or create."""
    with connect(Role.READER, db) as conn:
        assert conn.execute("select count(*) from ops.alerts").fetchone()[0] == 0
        for statement in (
            "insert into raw.equipment values ('X-1', 'radar', 'A')",
            "update ops.alerts set status = 'resolved'",
            "create table analytics.sneaky (x int)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
            conn.rollback()


def test_one_open_alert_per_equipment(db):
    """The schema itself refuses a second open alert for the same equipment and failure mode."""
    with connect(Role.ALERTING, db) as conn:
        insert = (
            "insert into ops.alerts (equipment_id, severity, message) "
            "values ('GEN-0001', 'HIGH', 'vibration rising')"
        )
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


def test_embedded_server_settings_reach_an_older_data_directory(tmp_path):
    """A data directory made by an older release (its settings appended to postgresql.auto.conf
    at initdb: 128 MB shared buffers) runs with the current ones after a restart, and what an
    administrator sets with ALTER SYSTEM still wins."""
    server = EmbeddedPostgres(tmp_path / "pg", port=free_port(), superuser_password="pw-" * 8)
    server.init()
    with (server.pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write(
            "\nmax_connections = 200\nshared_buffers = '128MB'\nwork_mem = '16MB'\n"
            "maintenance_work_mem = '256MB'\nmax_wal_size = '2GB'\n"
            "synchronous_commit = on\nlisten_addresses = '127.0.0.1'\nio_method = 'sync'\n"
        )

    def show(*names: str) -> list[str]:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            return [conn.execute(f"show {name}").fetchone()[0] for name in names]

    try:
        server.start()
        assert show("shared_buffers", "work_mem", "max_parallel_workers_per_gather") == [
            "16MB",
            "8MB",
            "0",
        ]
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute("alter system set work_mem = '32MB'")
        server.stop()
        server.start()
        assert show("shared_buffers", "work_mem") == ["16MB", "32MB"]
    finally:
        server.stop()


@pytest.fixture
def migrations_copy(tmp_path: Path) -> Path:
    """The migrations folder copied, to edit one as a later checkout would."""
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    return copy


# Migrations whose first line cited an issue number when installs applied them: (version, the
# line's title, the number), to put the text back as those installs have it.
CITED_AN_ISSUE = (
    (20, "Ingest ledger additions", 3),
    (80, "Ingest hardening", 22),
    (90, "Outbox", 23),
    (100, "Least privilege", 26),
    (101, "Sign-in, sessions and tokens", 26),
    (102, "Model integrity", 26),
)


def test_an_install_from_before_comment_edits_migrates_cleanly(db, migrations_copy):
    """An install that applied the migrations as they were, header comments citing issue
    numbers and checksums of the whole text, migrates with today's files without complaint and
    records checksums that ignore comments; from then on an edited comment or indentation is no
    change either."""
    for version, title, number in CITED_AN_ISSUE:
        path = next(migrations_copy.glob(f"{version:04d}_*.sql"))
        text = path.read_text(encoding="utf-8")
        assert text.startswith(f"-- {title}")
        path.write_text(text.replace(title, f"{title} (issue {number})", 1), encoding="utf-8")
    with connect(Role.OWNER, db, autocommit=True) as conn:
        for migration in discover_migrations(migrations_copy):
            conn.execute(
                "update public.schema_migrations set checksum = %s where version = %s",
                (hashlib.sha256(migration.sql.encode()).hexdigest(), migration.version),
            )
    assert migrate(db).applied == []
    with connect(Role.OWNER, db, autocommit=True) as conn:
        recorded = dict(conn.execute("select version, checksum from public.schema_migrations"))
        assert recorded == {m.version: m.checksum for m in discover_migrations()}

        edited = next(migrations_copy.glob("0020_*.sql"))
        text = edited.read_text(encoding="utf-8").replace("add column", "add  column")
        edited.write_text("-- The ledger, as ingest claims files.\n" + text, encoding="utf-8")
        assert _apply_versioned(conn, migrations_copy) == []


def test_a_changed_statement_in_an_applied_migration_stops_migrate(owner_conn, migrations_copy):
    """Changing what an applied migration does (a column's type) fails with the file named and
    what to do instead; nothing is applied."""
    edited = next(migrations_copy.glob("0020_*.sql"))
    text = edited.read_text(encoding="utf-8")
    assert "stored_name text" in text
    edited.write_text(text.replace("stored_name text", "stored_name varchar"), encoding="utf-8")
    with pytest.raises(RuntimeError, match=r"0020_ingest_ledger_claims\.sql was changed") as e:
        _apply_versioned(owner_conn, migrations_copy)
    assert "put the change in a new migration" in str(e.value)


def test_checksums_read_statements_not_comments():
    """Comments and layout drop out of what a checksum reads; quoted text, including a `--` in
    a table's comment or a function body, does not."""
    assert schema_text("-- why\ncreate table t (\n    a int  -- the a\n);\n/* more */") == (
        "create table t ( a int );"
    )
    assert "'a -- b'" in schema_text("comment on table t is 'a -- b';")
    body = "create function f() returns int language sql as $$ select 1 -- one\n $$;"
    assert "$$ select 1 -- one\n $$" in schema_text(body)
