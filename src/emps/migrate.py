"""Versioned, re-runnable schema migrations, then the catalog-driven parts of the schema."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect, ensure_database, one
from emps.settings import Settings, get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
PARTITIONED_TABLES = ("raw.sensor_readings", "ops.predictions")
LOCK_KEY = 7_410_551  # pg_advisory_lock key: one migrate at a time


# Comment-only edits of migrations applied before checksums ignored comments: per version, the
# checksum recorded for the text as first applied. An install that recorded it is upgraded to the
# comment-insensitive checksum on its next migrate.
COMMENT_EDITS = {
    20: "71d5d195dbb118af88b5b8f2c324835b85022cf364eeec9702bc9bc74ded390c",
    80: "e509e09dfe0ec52e8ab49a89906b16067258e9d2cea5bcc5dbcc2f0c3394754f",
    90: "9584d3930f91ffc61a7cd2377e7f1c7f684f1f2908acb754c58de7ad883836f2",
    100: "add9e259b1ea58f405b08681c73b371464b800713468eaf65b78d927fdcf0ac2",
    101: "101881dfefc96ba1bbd61473bc517fedc3cb7a7d0535711eab4a4905e17e12b5",
    102: "6b4a50d6f454c68535c6b2e68e4b1bc3b05fcd98e498d8a97c2fb8a0dcb9f585",
}
# What a checksum reads: quoted text and dollar-quoted bodies as they are, comments dropped, runs
# of whitespace as one space. Alternatives in order: a match is never inside an earlier kind.
SQL_TOKEN = re.compile(
    r"""(?P<text>(?<!\w)[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|"(?:[^"]|"")*"
          |(?P<tag>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)[\s\S]*?(?P=tag))
       |(?P<comment>--[^\n]*|/\*[\s\S]*?\*/)
       |(?P<space>\s+)""",
    re.VERBOSE,
)


def schema_text(text: str) -> str:
    """The SQL as the database sees it: no comments, whitespace runs as one space, string
    literals, quoted names and function bodies untouched."""

    def keep(match: re.Match[str]) -> str:
        return match["text"] if match["text"] is not None else " "

    return re.sub(r" +", " ", SQL_TOKEN.sub(keep, text)).strip()


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """Of the statements, not their comments or layout: editing a comment is no change."""
        return hashlib.sha256(schema_text(self.sql).encode()).hexdigest()

    @property
    def legacy_checksums(self) -> set[str]:
        """What installs recorded before checksums ignored comments: of the text as it is, or
        as first applied when only its comments were edited since."""
        legacy = {hashlib.sha256(self.sql.encode()).hexdigest()}
        return legacy | ({COMMENT_EDITS[self.version]} if self.version in COMMENT_EDITS else set())


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    sensor_columns_added: list[str] = field(default_factory=list)
    partitions_created: int = 0
    thresholds_seeded: list[str] = field(default_factory=list)


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_FILE.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if len(versions) != len(set(versions)):
        raise ValueError(f"two migration files share a version number in {directory}")
    return migrations


def migrate(settings: Settings | None = None, catalog: Catalog | None = None) -> MigrateReport:
    """Apply pending migrations, sync sensor columns from the catalog, create partitions ahead."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    ensure_database(settings)
    report = MigrateReport()
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            report.applied = _apply_versioned(conn)
            with conn.transaction():
                report.sensor_columns_added = sync_catalog(conn, catalog)
            with conn.transaction():
                report.thresholds_seeded = seed_thresholds(conn, settings)
            report.partitions_created = ensure_partitions(conn, settings)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    return report


def _apply_versioned(conn: psycopg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    conn.execute(
        """
        create table if not exists public.schema_migrations (
            version integer primary key,
            name text not null,
            checksum text not null,
            applied_at timestamptz not null default now()
        )
        """
    )
    applied = {
        version: checksum
        for version, checksum in conn.execute(
            "select version, checksum from public.schema_migrations"
        )
    }
    done = []
    for migration in discover_migrations(directory):
        if migration.version in applied:
            recorded = applied[migration.version]
            if recorded in migration.legacy_checksums and recorded != migration.checksum:
                conn.execute(
                    "update public.schema_migrations set checksum = %s where version = %s",
                    (migration.checksum, migration.version),
                )
            elif recorded != migration.checksum:
                raise RuntimeError(
                    f"migration {migration.version:04d}_{migration.name}.sql was changed after "
                    "this database applied it (its statements differ, not only comments or "
                    "spacing): restore the file as it was and put the change in a new migration"
                )
            continue
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                "insert into public.schema_migrations (version, name, checksum) values (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        done.append(f"{migration.version:04d}_{migration.name}")
    return done


def seed_thresholds(conn: psycopg.Connection, settings: Settings) -> list[str]:
    """Set the thresholds no admin has set yet (ops.thresholds rows still by 'migration') from
    EMPS_SEVERITY_* and EMPS_SILENT_MINUTES; an admin's value always wins. Returns the keys changed.
    Left alone when the result would not rise (an admin's HIGH below the configured MEDIUM)."""
    configured = {
        "severity_medium": settings.thresholds.severity_medium,
        "severity_high": settings.thresholds.severity_high,
        "severity_critical": settings.thresholds.severity_critical,
        "silent_minutes": float(settings.thresholds.silent_minutes),
    }
    current: dict[str, float] = dict(
        conn.execute("select key, value from ops.thresholds for update").fetchall()
    )
    unset = {
        key
        for (key,) in conn.execute("select key from ops.thresholds where updated_by = 'migration'")
    }
    changed = [k for k, v in configured.items() if k in unset and current.get(k) != v]
    merged = {**current, **{k: configured[k] for k in changed}}
    medium, high, critical = (
        merged.get(k) for k in ("severity_medium", "severity_high", "severity_critical")
    )
    if not changed or medium is None or high is None or critical is None:
        return []
    if not medium < high < critical:
        return []
    for key in changed:
        conn.execute(
            "update ops.thresholds set value = %s, updated_at = now() where key = %s",
            (configured[key], key),
        )
    return changed


def sync_catalog(conn: psycopg.Connection, catalog: Catalog) -> list[str]:
    """One double-precision column per catalog channel (sensors and settings); the catalog
    mirrored into raw tables for SQL, dbt and the dashboard to join.

    A channel removed from the catalog keeps its column: readings are never dropped by a config
    edit. Returns the columns added.
    """
    existing = {
        row[0]
        for row in conn.execute(
            "select column_name from information_schema.columns "
            "where table_schema = 'raw' and table_name = 'sensor_readings'"
        )
    }
    added = []
    for name in catalog.channel_names:
        if name not in existing:
            conn.execute(
                sql.SQL("alter table raw.sensor_readings add column {} double precision").format(
                    sql.Identifier(name)
                )
            )
            added.append(name)
    for table in (
        "raw.sensor_catalog",
        "raw.equipment_type_envelopes",
        "raw.equipment_type_channels",
        "raw.equipment_types",
    ):
        conn.execute(sql.SQL("delete from {}").format(sql.Identifier(*table.split("."))))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into raw.sensor_catalog "
            "(sensor, unit, description, valid_min, valid_max, required, role) "
            "values (%s, %s, %s, %s, %s, %s, %s)",
            [
                (c.name, c.unit, c.description, *c.valid_range, c.required, c.role)
                for c in catalog.channels.values()
            ],
        )
        cur.executemany(
            "insert into raw.equipment_types values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    t.name,
                    t.description,
                    t.clock.kind,
                    t.clock.unit,
                    t.clock.interval_s,
                    t.clock.start,
                    t.slot_seconds,
                    t.clock.life_unit,
                    t.clock.life_unit_seconds,
                    t.horizon_seconds,
                )
                for t in catalog.equipment_types.values()
            ],
        )
        cur.executemany(
            "insert into raw.equipment_type_channels values (%s, %s)",
            [(t.name, c) for t in catalog.equipment_types.values() for c in t.channels],
        )
        cur.executemany(
            "insert into raw.equipment_type_envelopes values (%s, %s, %s, %s)",
            [
                (etype.name, channel, low, high)
                for etype in catalog.equipment_types.values()
                for channel, (low, high) in etype.normal.items()
            ],
        )
    return added


def ensure_partitions(
    conn: psycopg.Connection,
    settings: Settings | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Create monthly partitions from `start` (default: last month) to `months_ahead` from now."""
    settings = settings or get_settings()
    now = datetime.now(UTC)
    start = start or (now.replace(day=1) - timedelta(days=1))
    end = end or (now + timedelta(days=31 * settings.database.partitions_months_ahead))
    created = 0
    for table in PARTITIONED_TABLES:
        row = one(
            conn.execute(
                "select ops.ensure_month_partitions(%s::regclass, %s, %s)", (table, start, end)
            )
        )
        created += row[0]
    return created
