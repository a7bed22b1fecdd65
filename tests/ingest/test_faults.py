"""Faults during a load: after the dust settles every valid reading is stored exactly once."""

from __future__ import annotations

import multiprocessing
import os
import signal

from emps.catalog import load_catalog
from emps.db import embedded_server
from emps.ingest import load, pipeline
from emps.ingest.landing import Landing
from emps.ingest.pipeline import ingest_landing
from emps.settings import Settings
from tests.ingest.conftest import Drops, reading

ROWS = 50


def drop_batch(drops: Drops) -> None:
    drops.csv("batch.csv", [reading(f"GEN-{i % 5 + 1:04d}", minute=i) for i in range(ROWS)])
    drops.csv("bad.csv", [reading(minute=100, voltage=99999)])


def assert_settled(landing: Landing, query) -> None:
    assert query(
        "select count(*), count(distinct (equipment_id, ts)) from raw.sensor_readings"
    ) == [(ROWS, ROWS)]
    assert query("select count(*) from raw.quarantined_rows") == [(1,)]
    statuses = sorted(row[0] for row in query("select status from raw.ingest_files"))
    assert statuses == ["loaded", "quarantined"]
    assert not list(landing.processing.iterdir())
    assert len([p for p in landing.archive.rglob("*") if p.is_file()]) == 2


def _die(*args, **kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _ingest_until_killed(where: str) -> None:
    if where == "before-commit":
        finish = load.LoadGroup.finish_files

        def finish_then_die(self, rows):
            finish(self, rows)  # staged, inserted and ledgered, not yet committed
            _die()

        load.LoadGroup.finish_files = finish_then_die
    else:
        pipeline.zone.archive = _die  # committed, files not yet moved
    pipeline.ingest_landing()


def run_and_die(where: str) -> int | None:
    """Run ingest in a forked child that SIGKILLs itself at `where`; returns its exit code.

    Forked so the child inherits this process's warmed-up Great Expectations context instead
    of paying its import again; the kill is a real SIGKILL of a separate process.
    """
    pipeline.suite_runner(load_catalog())._build_once()
    child = multiprocessing.get_context("fork").Process(target=_ingest_until_killed, args=(where,))
    child.start()
    child.join(timeout=300)
    return child.exitcode


def test_database_restart_mid_load_retries_and_loads_once(
    drops: Drops, landing: Landing, ingest_db: Settings, query, monkeypatch
):
    """PostgreSQL restarting in the middle of a load: the group is retried and loads exactly once."""
    drop_batch(drops)
    insert = load.LoadGroup.insert
    restarts = []

    def restart_then_insert(self):
        if not restarts:
            server = embedded_server(ingest_db)
            server.stop(mode="immediate")
            server.start()
            restarts.append(1)
        return insert(self)

    monkeypatch.setattr(load.LoadGroup, "insert", restart_then_insert)
    report = ingest_landing(ingest_db)
    assert restarts == [1]
    assert report.total("rows_loaded") == ROWS
    assert_settled(landing, query)


def test_killed_after_copy_before_commit_leaves_nothing_half_loaded(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """A run killed after the COPY but before the commit stores nothing; a later run takes the claim back and loads once."""
    drop_batch(drops)
    assert run_and_die("before-commit") == -9
    assert query("select count(*) from raw.sensor_readings") == [(0,)]
    assert query("select count(*) from raw.quarantined_rows") == [(0,)]
    assert {row[0] for row in query("select status from raw.ingest_files")} == {"claimed"}
    assert len(list(landing.processing.iterdir())) == 2

    # Within the claim timeout nobody touches the files: the killed run might be alive.
    assert ingest_landing(ingest_db).files == []
    report = ingest_landing(ingest_db.model_copy(update={"ingest_claim_timeout_s": 0}))
    assert report.recovered == 2
    assert_settled(landing, query)


def test_killed_after_commit_before_archive_does_not_load_twice(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """A run killed after its commit but before moving the files: the re-run reads the ledger and only archives."""
    drop_batch(drops)
    assert run_and_die("before-archive") == -9
    assert query("select count(*) from raw.sensor_readings") == [(ROWS,)]
    assert len(list(landing.processing.iterdir())) == 2

    report = ingest_landing(ingest_db)
    assert report.recovered == 2
    assert report.total("rows_loaded") == 0
    assert_settled(landing, query)
