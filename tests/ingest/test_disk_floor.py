"""A disk running out of space under ingest, on a real small file system (a tmpfs the test
mounts): ingest pauses at EMPS_INGEST_MIN_FREE_MB with the `disk_low` alert open, resumes when
space returns, and a disk that fills up within a run loses no file and loads every reading once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emps.alerting import operations
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.ingest import landing as zone
from emps.ingest import load, pipeline
from emps.ingest.landing import Landing
from emps.ingest.pipeline import ingest_landing
from emps.metrics import PlatformCollector
from emps.settings import Settings, get_settings
from tests.ingest.corpus import Readings
from tests.small_disk import MB, fill_until_free, fill_up, run_on_small_disk, tmpfs

UNIT = "unit-d1"
ROWS_PER_FILE = 5
DISK_MB = 16
FLOOR_MB = 4  # EMPS_INGEST_MIN_FREE_MB of these tests
OPS = RecipientsConfig(people=(Recipient("Platform admins", "admin", ("*",), "ops@crews.example"),))
DISK_LOW = [operations.RULES["disk_low"]]


@pytest.fixture
def fleet(ingest_db: Settings) -> Readings:
    """One registered machine of the catalog's first type and valid readings for it."""
    catalog = load_catalog(ingest_db.catalog_path)
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type) values (%s, %s)",
            (UNIT, catalog.type_names[0]),
        )
    # Loaded once here: the scenarios run in forked children, which then skip its ~10 s build.
    pipeline.suite_runner(catalog)._build_once()
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    return Readings(catalog, base, [UNIT])


def drop(landing: Landing, fleet: Readings, files: int, first_minute: int = 0) -> dict[str, str]:
    """Drop `files` CSV files of ROWS_PER_FILE readings, oldest first; their sha256 by name."""
    dropped = {}
    for i in range(files):
        minute = first_minute + i * ROWS_PER_FILE
        data = fleet.csv([fleet.row(minute + r) for r in range(ROWS_PER_FILE)])
        dropped[f"drop-{i}.csv"] = put(landing, f"drop-{i}.csv", data, age_s=100 - i)
    return dropped


def put(landing: Landing, name: str, data: bytes, age_s: int) -> str:
    path = landing.incoming / name
    path.write_bytes(data)
    stamp = datetime.now(UTC).timestamp() - age_s
    os.utime(path, (stamp, stamp))
    return hashlib.sha256(data).hexdigest()


def contents(folder: Path) -> Counter[str]:
    """sha256 of every file under `folder` (reason notes aside), with how often each is there."""
    return Counter(
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(".reason.json")
    )


def readings(query) -> tuple[int, int]:
    [row] = query("select count(*), count(distinct (equipment_id, ts)) from raw.sensor_readings")
    return row


def test_ingest_pauses_at_the_floor_of_a_small_landing_disk_alerts_and_resumes_losing_nothing(
    fleet: Readings, ingest_db: Settings, query, tmp_path: Path
):
    """With the landing zone on a small file system of its own filled below
    EMPS_INGEST_MIN_FREE_MB, ingest claims nothing, the drop files wait in incoming/, the
    free-disk metric shows the shortage and `disk_low` opens critical; with the space back the
    next run loads every reading once, archives every file and the alert resolves."""
    settings = ingest_db.replace(
        home=tmp_path / "home",
        ingest={"min_free_mb": FLOOR_MB},
        operations={"disk_critical_free_mb": FLOOR_MB + 2, "disk_warn_free_mb": FLOOR_MB + 6},
    )
    landing = Landing(settings.landing_dir)

    def scenario() -> None:
        landing.ensure()
        dropped = drop(landing, fleet, files=3)
        ballast = fill_until_free(landing.root, (FLOOR_MB - 1) * MB)

        report = ingest_landing(settings)
        assert report.files == []
        assert "under EMPS_INGEST_MIN_FREE_MB" in report.paused
        assert contents(landing.incoming) == Counter(dropped.values())
        assert query("select count(*) from raw.ingest_files") == [(0,)]
        assert readings(query) == (0, 0)
        [free] = [
            f for f in PlatformCollector(settings).collect() if f.name == "emps_disk_free_bytes"
        ]
        assert free.samples[0].value < FLOOR_MB * MB
        assert operations.evaluate(settings, recipients=OPS, rules=DISK_LOW).opened == [
            ("disk_low", "critical")
        ]
        [(summary,)] = query(
            "select summary from ops.operations_alerts where rule = 'disk_low' and status = 'open'"
        )
        assert str(landing.root) in summary

        ballast.unlink()
        report = ingest_landing(settings)
        assert report.paused is None
        assert sorted(o.file for o in report.files if o.status == "loaded") == sorted(dropped)
        assert readings(query) == (3 * ROWS_PER_FILE, 3 * ROWS_PER_FILE)
        assert contents(landing.archive) == Counter(dropped.values())
        assert not any(landing.incoming.iterdir()) and not any(landing.processing.iterdir())
        assert operations.evaluate(settings, recipients=OPS, rules=DISK_LOW).resolved == [
            ("disk_low", "critical")
        ]

    settings.home.mkdir()
    run_on_small_disk(landing.root, DISK_MB, scenario)


def test_a_disk_filling_up_within_a_run_loses_no_file_and_loads_each_reading_once(
    fleet: Readings, ingest_db: Settings, query, tmp_path: Path
):
    """When the home's disk fills up after a run's first file (the floor at 0 catches nothing),
    the files claimed with it still load once, validation results are skipped rather than
    blamed on a file, an unreadable file whose quarantine note cannot be written stays whole in
    processing/ with no half-written file left anywhere, and the next run with space
    quarantines it with its reason, loading nothing twice."""
    settings = ingest_db.replace(
        home=tmp_path / "home", ingest={"min_free_mb": 0, "group_bytes": 1024}
    )
    landing = Landing(settings.landing_dir)

    def scenario() -> None:
        landing.ensure()
        # The first file fills a load group of its own (EMPS_INGEST_GROUP_BYTES); the rest,
        # the unreadable one last, load in the next group, once the disk is full.
        big = fleet.csv([fleet.row(minute) for minute in range(40)])
        assert len(big) >= settings.ingest.group_bytes
        dropped = {"first.csv": put(landing, "first.csv", big, age_s=300)}
        dropped |= drop(landing, fleet, files=2, first_minute=100)
        unreadable = put(landing, "unreadable.csv", b"no readings here\n1\n", age_s=1)
        ballast: list[Path] = []

        def fill_after_first(outcome: pipeline.FileOutcome) -> None:
            if not ballast:
                ballast.append(fill_up(settings.home))

        report = pipeline.ingest_landing(settings, on_file=fill_after_first)
        assert "the disk filled up (No space left on device)" in report.paused
        statuses = {o.file: o.status for o in report.files}
        assert statuses == {**dict.fromkeys(dropped, "loaded"), "unreadable.csv": "quarantined"}
        rows = 40 + 2 * ROWS_PER_FILE
        assert readings(query) == (rows, rows)
        assert contents(landing.archive) == Counter(dropped.values())
        assert contents(landing.processing) == Counter([unreadable])
        assert not any(landing.quarantine.iterdir())
        assert list(settings.home.rglob(".*")) == []  # no half-written temporary file
        for result in (settings.home / "gx" / "results").iterdir():
            json.loads(result.read_text())  # the validation results kept are whole

        ballast[0].unlink()
        report = ingest_landing(settings)
        assert report.files == [] and report.recovered == 1
        assert contents(landing.quarantine) == Counter([unreadable])
        [note] = landing.quarantine.glob("*.reason.json")
        assert "required column" in note.read_text()
        assert not any(landing.processing.iterdir())
        assert readings(query) == (rows, rows)
        assert sorted(query("select file_name, status, attempts from raw.ingest_files")) == [
            *[(name, "loaded", 1) for name in sorted(dropped)],
            ("unreadable.csv", "quarantined", 1),
        ]

    settings.home.mkdir()
    run_on_small_disk(settings.home, DISK_MB, scenario)


def test_emps_ingest_of_a_file_onto_a_full_disk_says_so_and_leaves_no_half_copy(
    fleet: Readings, ingest_db: Settings, tmp_path: Path, monkeypatch
):
    """`emps ingest PATH` whose copy into incoming/ runs out of space says so, exits 1 and
    leaves no partial copy for a run to trip over; the user's file is untouched."""
    from typer.testing import CliRunner

    from emps.cli import app

    source = tmp_path / "history.csv"
    source.write_bytes(fleet.csv([fleet.row(minute) for minute in range(2000)]))
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setattr(get_settings(), "home", tmp_path / "home")  # what the CLI reads
    landing = Landing(get_settings().landing_dir)

    def scenario() -> None:
        landing.ensure()
        fill_until_free(landing.root, 4096)
        done = CliRunner().invoke(app, ["ingest", str(source)])
        said = " ".join(done.output.split())
        assert done.exit_code == 1, done.output
        assert "could not copy the files into landing/incoming" in said
        assert "No space left on device" in said and "nothing was ingested" in said
        assert list(landing.incoming.iterdir()) == []

    (tmp_path / "home").mkdir()
    run_on_small_disk(landing.root, DISK_MB, scenario)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before


@pytest.fixture
def small_temp_tablespace(ingest_db: Settings, test_home: Path):
    """The ingest role's temporary tables (the staging of a load) on a 1 MB tmpfs that
    PostgreSQL's server sees, so it can run out of space; yields the mount point."""
    if os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL's own server must see the small file system: that takes a mount in "
            "the machine's namespace, which needs root (a user namespace is seen by the test "
            "alone)"
        )
    with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
        data_dir = Path(conn.execute("show data_directory").fetchone()[0])
    # Under the session home: PostgreSQL's user may not enter pytest's private tmp folder.
    mount = Path(tempfile.mkdtemp(prefix="small-temp-", dir=test_home))
    with tmpfs(mount, 1):
        owner = data_dir.stat()
        os.chown(mount, owner.st_uid, owner.st_gid)
        os.chmod(mount, 0o700)
        try:
            with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
                conn.execute(f"create tablespace emps_small_temp location '{mount}'")
                conn.execute("grant create on tablespace emps_small_temp to emps_ingest")
                conn.execute("alter role emps_ingest set temp_tablespaces = 'emps_small_temp'")
                # Small local buffers: the staging table reaches the disk at its first pages.
                conn.execute("alter role emps_ingest set temp_buffers = '800kB'")
            yield mount
        finally:
            with connect(Role.OWNER, ingest_db, autocommit=True) as conn:
                conn.execute("alter role emps_ingest reset temp_tablespaces")
                conn.execute("alter role emps_ingest reset temp_buffers")
                conn.execute("drop tablespace if exists emps_small_temp")
                # Crash recovery (a test stopping the server `immediate`) must not replay the
                # tablespace's creation: its folder is gone.
                conn.execute("checkpoint")
    mount.rmdir()


def test_a_database_disk_filling_up_mid_load_gives_the_claims_back_and_loses_nothing(
    fleet: Readings, ingest_db: Settings, landing: Landing, query, small_temp_tablespace: Path
):
    """When PostgreSQL runs out of disk while loading, nothing is quarantined and nothing is
    counted against the files: the run gives its claims back (no stale-claim alert however long
    the disk stays full) and the next run with space loads every reading once."""
    # Readings further apart than a direct load looks up go through the staging table.
    span = int(load.MAX_PROBE_SPAN / timedelta(minutes=1)) + 60
    data = fleet.csv([fleet.row(-span), fleet.row(0), fleet.row(1)])
    dropped = {"history.csv": put(landing, "history.csv", data, age_s=10)}
    dropped |= drop(landing, fleet, files=1, first_minute=10)
    ballast = fill_up(small_temp_tablespace)

    report = ingest_landing(ingest_db)
    assert "the database ran out of disk space" in report.paused
    assert report.files == []
    assert readings(query) == (0, 0)
    assert contents(landing.processing) == Counter(dropped.values())
    assert query("select status, claimed_by, attempts from raw.ingest_files") == [
        ("claimed", None, 1),
        ("claimed", None, 1),
    ]
    later = datetime.now(UTC) + timedelta(seconds=10 * ingest_db.ingest.claim_timeout_s)
    stale = operations.evaluate(
        ingest_db, now=later, recipients=OPS, rules=[operations.RULES["ingest_claim_stale"]]
    )
    assert stale.opened == []

    ballast.unlink()
    report = ingest_landing(ingest_db)
    assert report.paused is None
    assert sorted(o.file for o in report.files if o.status == "loaded") == sorted(dropped)
    assert readings(query) == (3 + ROWS_PER_FILE, 3 + ROWS_PER_FILE)
    assert contents(landing.archive) == Counter(dropped.values())
    assert not any(landing.processing.iterdir())
    assert query("select distinct status, attempts from raw.ingest_files") == [("loaded", 1)]


def test_a_flow_run_the_disk_filled_under_ends_failed_and_raises_the_operations_alert(
    prefect_server: str, fleet: Readings, landing: Landing, ingest_db: Settings, query, monkeypatch
):
    """When the disk fills up within a flow run (here archiving answers "no space left", as it
    did for real above), the run ends Failed saying so, which opens the `ingest_run_failed`
    operations alert; the readings are loaded and the next run only moves the file on."""
    from emps.flows.ingest import ingest_sensor_drops

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(landing.archive))

    dropped = drop(landing, fleet, files=1)
    with monkeypatch.context() as patch:
        patch.setattr(zone, "archive", no_space)
        state = ingest_sensor_drops(build=False, return_state=True)
    assert state.is_failed()
    assert "the disk filled up (No space left on device" in state.message
    assert readings(query) == (ROWS_PER_FILE, ROWS_PER_FILE)
    assert contents(landing.processing) == Counter(dropped.values())
    failed = operations.evaluate(
        ingest_db,
        recipients=OPS,
        rules=[operations.RULES["ingest_run_failed"]],
        prefect_api=prefect_server,
    )
    assert failed.opened == [("ingest_run_failed", operations.INGEST_FLOW)]

    report = ingest_landing(ingest_db)
    assert report.files == [] and report.recovered == 1
    assert contents(landing.archive) == Counter(dropped.values())
    assert readings(query) == (ROWS_PER_FILE, ROWS_PER_FILE)
