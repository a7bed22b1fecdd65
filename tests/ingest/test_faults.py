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
from tests.ingest.drop_files import Drops, reading

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
    report = ingest_landing(ingest_db.replace(ingest={"claim_timeout_s": 0}))
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


def test_a_poison_file_among_a_hundred_good_ones_does_not_stop_them(
    prefect_server, drops: Drops, landing: Landing, ingest_db: Settings, query, monkeypatch
):
    """A file that makes ingest itself fail (a fault nobody foresaw) is quarantined with the
    error; the 100 good files dropped with it load in the same run, which completes."""
    from emps.flows.ingest import ingest_sensor_drops

    read_file = pipeline.Ingestor._read_file

    def poisoned(self, claimed, outcome, alone):
        if claimed.original_name == "poison.csv":
            raise RuntimeError("the parser met something it cannot handle")
        return read_file(self, claimed, outcome, alone)

    monkeypatch.setattr(pipeline.Ingestor, "_read_file", poisoned)
    for i in range(100):
        drops.csv(f"good-{i:03d}.csv", [reading(f"GEN-{i % 5 + 1:04d}", minute=i)])
    drops.csv("poison.csv", [reading("GEN-0001", minute=500)])

    result = ingest_sensor_drops(build=False)

    assert result["rows_loaded"] == 100
    assert query("select count(distinct flow_run_id) from raw.ingest_files") == [(1,)]
    assert query(
        "select count(*) from raw.ingest_files where status = 'loaded' and left(file_name, 5) = 'good-'"
    ) == [(100,)]
    [(status, error)] = query(
        "select status, error from raw.ingest_files where file_name = 'poison.csv'"
    )
    assert status == "quarantined"
    assert "RuntimeError: the parser met something it cannot handle" in error
    assert [p.name.endswith("poison.csv") for p in landing.quarantine.iterdir()].count(True) == 1
    assert not list(landing.processing.iterdir())


def _die_on_poison() -> None:
    read_file = pipeline.Ingestor._read_file

    def killing(self, claimed, outcome, alone):
        if claimed.original_name == "killer.csv":
            _die()
        return read_file(self, claimed, outcome, alone)

    pipeline.Ingestor._read_file = killing
    pipeline.ingest_landing(
        pipeline.get_settings().replace(ingest={"claim_timeout_s": 0, "max_attempts": 2})
    )


def test_a_file_that_kills_its_run_is_retaken_alone_then_quarantined(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """A file whose reading kills the process: the next run takes it back alone, before claiming
    new files, so those load; once claimed EMPS_INGEST_MAX_ATTEMPTS times it is quarantined
    unread and stops holding anything up."""
    pipeline.suite_runner(load_catalog())._build_once()
    settings = ingest_db.replace(ingest={"claim_timeout_s": 0, "max_attempts": 2})
    drops.csv("killer.csv", [reading("GEN-0001", minute=1)])
    for attempt in range(2):
        child = multiprocessing.get_context("fork").Process(target=_die_on_poison)
        child.start()
        child.join(timeout=300)
        assert child.exitcode == -9
        # The second run takes the killer back alone, before claiming anything new, and dies
        # again: the files dropped meanwhile still wait unclaimed.
        drops.csv(f"later-{attempt}.csv", [reading("GEN-0002", minute=10 + attempt)])
        assert query("select file_name from raw.ingest_files where status = 'claimed'") == [
            ("killer.csv",)
        ]

    report = ingest_landing(settings)
    outcome = {o.file: o for o in report.files}
    assert outcome["killer.csv"].status == "quarantined"
    assert "did not finish this file in 2 attempts" in outcome["killer.csv"].error
    assert {outcome["later-0.csv"].status, outcome["later-1.csv"].status} == {"loaded"}
    assert query("select attempts from raw.ingest_files where file_name = 'killer.csv'") == [(3,)]
    assert not list(landing.processing.iterdir())


def test_ingest_pauses_below_the_free_disk_floor_and_resumes_losing_nothing(
    drops: Drops, landing: Landing, ingest_db, query, caplog
):
    """With less free disk than EMPS_INGEST_MIN_FREE_MB, ingest claims nothing and says so once:
    the drop files wait in incoming/. Once space returns (here: the floor lowered) the next run
    loads every reading, once."""
    full = ingest_db.replace(ingest={"min_free_mb": 1 << 40})  # more than any disk
    drop_batch(drops)
    for _ in range(2):
        assert ingest_landing(full).files == []
    assert caplog.text.count("ingest paused") == 1
    assert sorted(p.name for p in landing.incoming.iterdir()) == ["bad.csv", "batch.csv"]
    assert query("select count(*) from raw.ingest_files") == [(0,)]
    ingest_landing(ingest_db)
    assert "ingest resumed" in caplog.text
    assert_settled(landing, query)
