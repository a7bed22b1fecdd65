"""The landing zone: which files are claimed when (settled or announced), links and other
entries never read, device folders, and the entries reported as never ingested."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from emps.ingest import pipeline
from emps.ingest.landing import ArrivalLog, Landing, SettleClock, claim, scan
from emps.ingest.pipeline import ingest_landing
from emps.settings import Settings
from tests.ingest.drop_files import Drops, csv_bytes, reading


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_file_found_only_by_the_scan_is_claimed_once_settled(tmp_path: Path):
    """A file written a moment ago and not announced waits until its size and modification time
    have held for the settle time, even when its modification time lies in the future."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    path = incoming / "fresh.csv"
    path.write_bytes(b"x")
    clock = Clock()
    settle = SettleClock(2.0, clock=clock)
    written = path.stat().st_mtime_ns
    assert [e.rel for e in scan(incoming, settle=settle, now_ns=written).settling] == ["fresh.csv"]
    clock.now += 1.0
    assert not scan(incoming, settle=settle, now_ns=written + 1_000_000_000).ready
    clock.now += 1.0
    assert [e.rel for e in scan(incoming, settle=settle, now_ns=written + 2 * 10**9).ready] == [
        "fresh.csv"
    ]
    # A device clock ahead of ours: the file is claimed once seen unchanged for 2 s.
    future = incoming / "ahead.csv"
    future.write_bytes(b"x")
    os.utime(future, (time.time() + 3600, time.time() + 3600))
    now = time.time_ns()
    assert [e.rel for e in scan(incoming, settle=settle, now_ns=now).settling] == ["ahead.csv"]
    path.write_bytes(b"xy")  # changed: settles again
    clock.now += 2.0
    found = scan(incoming, settle=settle, now_ns=now)
    assert [e.rel for e in found.ready] == ["ahead.csv"]


def test_a_file_the_kernel_announces_is_claimed_at_once(tmp_path: Path):
    """Renamed into place or closed after writing, in incoming/ or a device folder created
    later, a file is claimed without waiting to settle; written to again, it settles first."""
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    log = ArrivalLog(incoming)
    assert log.active
    try:
        partial = incoming / ".a.csv.part"
        partial.write_bytes(b"one")
        os.rename(partial, incoming / "a.csv")
        (incoming / "dev-9").mkdir()
        log.poll()
        with (incoming / "dev-9" / "b.csv").open("wb") as handle:
            handle.write(b"two")
        assert log.wait(5)
        settle = SettleClock(60.0)
        found = scan(incoming, settle=settle, announced=log.announced)
        assert sorted(e.rel for e in found.ready) == ["a.csv", "dev-9/b.csv"]
        with (incoming / "a.csv").open("ab") as handle:  # appended after its announcement...
            handle.write(b"more")
            handle.flush()
            found = scan(incoming, settle=settle, announced=log.announced)
        assert [e.rel for e in found.settling] == ["a.csv"]  # ...so it settles like any other
    finally:
        log.close()


def test_a_link_swapped_in_after_the_scan_is_never_read(
    drops: Drops, landing: Landing, ingest_db: Settings, query, monkeypatch, tmp_path: Path
):
    """A regular file replaced by a symbolic link between the scan and the claim is quarantined
    as a link: the file it points to is neither read nor moved."""
    secret = tmp_path / "secret.csv"
    secret.write_bytes(csv_bytes([reading(minute=7)]))
    drops.csv("swap.csv", [reading(minute=1)])
    real_claim = pipeline.zone.claim

    def swap_then_claim(landing_, entry):
        link = entry.path.with_name(".link")
        link.symlink_to(secret)
        os.replace(link, entry.path)
        return real_claim(landing_, entry)

    monkeypatch.setattr(pipeline.zone, "claim", swap_then_claim)
    report = ingest_landing(ingest_db)
    [outcome] = report.files
    assert outcome.status == "quarantined" and "symbolic link" in outcome.error
    assert query("select count(*) from raw.sensor_readings") == [(0,)]
    assert secret.read_bytes() == csv_bytes([reading(minute=7)])
    kept = [p for p in landing.quarantine.iterdir() if not p.name.endswith(".reason.json")]
    assert len(kept) == 1 and kept[0].is_symlink()


def test_claim_opens_without_following_links(tmp_path: Path):
    """The claim refuses what it moved when that is a link or not a regular file."""
    landing = Landing(tmp_path).ensure()
    target = tmp_path / "elsewhere.csv"
    target.write_bytes(b"equipment_id\n")
    (landing.incoming / "link.csv").symlink_to(target)
    entry = scan(landing.incoming).ignored[0]
    assert entry.rel == "link.csv" and "symbolic link" in entry.why
    from emps.ingest.landing import Entry, Stamp

    link = landing.incoming / "link.csv"
    claimed = claim(landing, Entry("link.csv", link, Stamp.of(link.lstat())))
    assert claimed is not None and claimed.refused and "symbolic link" in claimed.refused


def test_files_in_device_folders_are_claimed_with_their_path(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """incoming/<site>/<device>/drop.csv loads like any drop; the ledger keeps its path and the
    device's folder stays for its next drop."""
    folder = landing.incoming / "north" / "dev-17"
    folder.mkdir(parents=True)
    (folder / "drop.csv").write_bytes(csv_bytes([reading(minute=3)]))
    ingest_landing(ingest_db)
    assert query("select file_name, status from raw.ingest_files") == [
        ("north/dev-17/drop.csv", "loaded")
    ]
    assert folder.is_dir() and not list(folder.iterdir())


def test_entries_never_claimed_are_reported_once_old_and_forgotten_when_gone(
    drops: Drops, landing: Landing, ingest_db: Settings, query
):
    """A dot file, a .part file, a link and a FIFO left in incoming/ are reported once older
    than EMPS_INGEST_IGNORED_WARN_S (a FIFO never blocks the run); gone, they are forgotten."""
    old = datetime.now(UTC) - timedelta(minutes=10)
    for name in (".left-behind.csv", "upload.csv.part"):
        (landing.incoming / name).write_bytes(b"x")
    os.utime(landing.incoming / ".left-behind.csv", (old.timestamp(), old.timestamp()))
    os.mkfifo(landing.incoming / "pipe")
    os.utime(landing.incoming / "pipe", (old.timestamp(), old.timestamp()))
    drops.csv("real.csv", [reading(minute=1)])
    began = time.monotonic()
    ingest_landing(ingest_db)
    assert time.monotonic() - began < 60
    reported = dict(query("select path, why from raw.landing_ignored"))
    assert set(reported) == {".left-behind.csv", "pipe"}
    assert "hidden" in reported[".left-behind.csv"] and "pipe" in reported["pipe"]
    (landing.incoming / ".left-behind.csv").unlink()
    ingest_landing(ingest_db)
    assert {r[0] for r in query("select path from raw.landing_ignored")} == {"pipe"}
