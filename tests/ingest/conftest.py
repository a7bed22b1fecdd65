"""Ingest test fixtures: a clean landing zone with the test fleet registered, and `drops`,
which writes drop files into it (the files themselves: drop_files.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import psycopg
import pytest

from emps.db import Role, connect
from emps.ingest.landing import Landing
from emps.settings import Settings
from tests.ingest.drop_files import EQUIPMENT, Drops


@pytest.fixture
def ingest_db(db: Settings) -> Iterator[Settings]:
    """Empty database with the test fleet registered, and an empty landing zone."""
    shutil.rmtree(db.landing_dir, ignore_errors=True)
    with connect(Role.OWNER, db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, case when id like 'GEN%%' then 'generator' else 'pump' end, 'north' "
            "from unnest(%s::text[]) as id",
            (EQUIPMENT,),
        )
    yield db
    shutil.rmtree(db.landing_dir, ignore_errors=True)


@pytest.fixture
def landing(ingest_db: Settings) -> Landing:
    return Landing(ingest_db.landing_dir).ensure()


@pytest.fixture
def drops(landing: Landing) -> Drops:
    return Drops(landing)


@pytest.fixture
def query(ingest_db: Settings):
    """Run a read query as owner and return all rows."""

    def run(sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(_owner_url(ingest_db), autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    return run


def _owner_url(settings: Settings) -> str:
    from emps.db import database_url

    return database_url(Role.OWNER, settings)
