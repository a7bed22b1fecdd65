"""The landing watcher: file arrivals become a few `emps.file.arrived` events, and the ingest
deployment's trigger (prefect.yaml) turns one into an ingest run."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emps.ingest.landing import Landing
from emps.ingest.watch import (
    Arrival,
    Coalescer,
    Heartbeat,
    LandingWatcher,
    run_alive,
    waiting_names,
)
from emps.processes import free_port
from emps.settings import PROJECT_ROOT, Settings
from tests.ingest.drop_files import Drops, csv_bytes, reading


def test_a_burst_makes_one_event_and_files_no_run_took_are_announced_again():
    """1,000 files arriving over three seconds, looked at ten times a second: the first is
    announced at once and the run that event asks for is given the re-arm delay to start
    (it takes the whole burst); when none came, the rest are announced then."""
    coalescer = Coalescer(min_interval_s=2.0, rearm_s=10.0)
    waiting: dict[str, float] = {}
    events = []
    start = 1_000_000.0
    for step in range(120):
        now = start + step * 0.1
        if step < 30:
            for i in range(step * 34, min((step + 1) * 34, 1000)):
                waiting[f"dev-{i:04d}.csv"] = now
        if (arrival := coalescer.observe(dict(waiting), now)) is not None:
            events.append((now - start, arrival))
    assert [round(at, 1) for at, _ in events] == [0.0, 10.0]
    assert sum(a.new for _, a in events) == 1000


def test_no_event_while_an_ingest_run_is_alive():
    """While a run's heartbeat is fresh the watcher asks for no run (it would be cancelled);
    files still waiting when the run ends are announced at once."""
    coalescer = Coalescer(min_interval_s=2.0, rearm_s=10.0)
    assert coalescer.observe({"a.csv": 0.0}, 0.0, run_alive=True) is None
    assert coalescer.observe({"a.csv": 0.0, "b.csv": 50.0}, 50.0, run_alive=True) is None
    after = coalescer.observe({"b.csv": 50.0}, 51.0, run_alive=False)
    assert after is not None and after.examples == ["b.csv"]


def test_claimed_files_are_forgotten_and_new_ones_announced():
    """Once ingest has taken the files, the next arrival is announced as soon as it is seen."""
    coalescer = Coalescer(min_interval_s=2.0, rearm_s=10.0)
    assert coalescer.observe({"a.csv": 0.0}, 0.0).new == 1
    assert coalescer.observe({}, 1.0) is None
    assert coalescer.observe({"b.csv": 2.5}, 2.5).examples == ["b.csv"]
    assert coalescer.announced == {"b.csv"}


def test_files_left_waiting_are_announced_again():
    """A file whose event came to nothing (the run it started was cancelled while another was
    busy) is announced again after the re-arm delay, not left for the schedule."""
    coalescer = Coalescer(min_interval_s=2.0, rearm_s=10.0)
    assert coalescer.observe({"a.csv": 0.0}, 0.0) is not None
    assert all(coalescer.observe({"a.csv": 0.0}, t) is None for t in (1.0, 5.0, 9.9))
    again = coalescer.observe({"a.csv": 0.0}, 10.0)
    assert again is not None and again.rearmed and again.waiting == 1
    assert coalescer.observe({}, 30.0) is None


def test_waiting_names_skips_partial_files_and_links(tmp_path: Path):
    """Only finished regular files count, in incoming/ and its folders: `.x.part` names,
    links and folders themselves are not arrivals."""
    (tmp_path / "done.csv").write_text("x")
    (tmp_path / ".writing.csv.part").write_text("x")
    (tmp_path / "upload.tmp").write_text("x")
    (tmp_path / "link.csv").symlink_to(tmp_path / "done.csv")
    (tmp_path / "dev-7").mkdir()
    (tmp_path / "dev-7" / "drop.csv").write_text("x")
    assert sorted(waiting_names(tmp_path)) == ["dev-7/drop.csv", "done.csv"]
    assert waiting_names(tmp_path / "missing") == {}


def test_watcher_coalesces_real_file_drops(landing: Landing, ingest_db: Settings):
    """The running watcher sees files renamed into incoming/ within a second and announces a
    burst of 1,000 in a few events (with no run to take them, the rest once the re-arm delay
    passed)."""
    events: list[tuple[float, Arrival]] = []
    settings = ingest_db.replace(ingest={"watch_rearm_s": 3.0})
    watcher = LandingWatcher(settings, emit=lambda a: events.append((time.time(), a)))
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        began = time.time()
        for i in range(1000):
            partial = landing.incoming / f".dev-{i:04d}.csv.part"
            partial.write_text("equipment_id,timestamp\n")
            os.rename(partial, landing.incoming / f"dev-{i:04d}.csv")
        deadline = time.monotonic() + 15
        while sum(a.new for _, a in events) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        watcher.stop()
        thread.join(timeout=10)
    assert sum(a.new for _, a in events) == 1000
    assert 1 <= len(events) <= 3, [a.payload() for _, a in events]
    assert events[0][0] - began < 2.0


def _prefect(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    prefect = Path(sys.executable).parent / "prefect"
    return subprocess.run(
        [str(prefect), *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.timeout(900)
def test_a_dropped_file_is_ingested_by_the_run_its_event_triggers(
    prefect_server: str, drops: Drops, ingest_db: Settings, query, monkeypatch
):
    """With the deployments of prefect.yaml registered (no schedule, a safety-net trigger), the
    watcher's event makes the server's automation create an ingest run, and that run loads the
    file."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)  # as `emps up` gives the watcher
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "EMPS_PROJECT_ROOT": str(PROJECT_ROOT),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    pool = _prefect("work-pool", "create", "emps-local", "--type", "process", env=env)
    assert pool.returncode == 0 or "already exists" in pool.stdout + pool.stderr, pool.stdout
    # The feature build an ingest run does after loading is tested in tests/dbt.
    deployed = _prefect(
        "--no-prompt", "deploy", "--name", "ingest-sensor-drops", "--param", "build=false", env=env
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    async def deployment_and_triggers() -> tuple:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(
                "ingest-sensor-drops/ingest-sensor-drops"
            )
            automations = await client.read_resource_related_automations(
                f"prefect.deployment.{deployment.id}"
            )
        return deployment, [a.trigger for a in automations]

    # No schedule whose runs the concurrency limit would cancel: a safety-net trigger that
    # fires only after a minute without a live run or an announced file.
    deployment, triggers = asyncio.run(deployment_and_triggers())
    assert deployment.schedules == []
    [net] = [t for t in triggers if t.posture == "Proactive"]
    assert net.expect == {"emps.ingest.alive", "emps.file.arrived"}
    assert net.within.total_seconds() == 60 and net.threshold == 1

    drops.put("arrived.csv", csv_bytes([reading("GEN-0001", minute=i) for i in range(3)]))
    watcher = LandingWatcher(ingest_db)
    arrival = watcher.check()
    assert arrival is not None and arrival.new == 1

    async def triggered_runs() -> list:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["ingest-sensor-drops"])
                )
            )
        return [r for r in runs if r.created_by and r.created_by.type == "AUTOMATION"]

    runs: list = []
    deadline = time.monotonic() + 90  # the event reaches the server, then its trigger fires
    while not runs and time.monotonic() < deadline:
        time.sleep(1)
        runs = asyncio.run(triggered_runs())
    assert runs, "no ingest run was triggered by emps.file.arrived"

    # A second file, and a run allowed one file per batch and no time to loop: it stops with
    # a file still waiting and hands over to a successor it schedules a few seconds ahead.
    drops.put("second.csv", csv_bytes([reading("GEN-0002", minute=i) for i in range(2)]))
    short = {**env, "EMPS_INGEST_LOOP_MAX_S": "0", "EMPS_INGEST_MAX_FILES_PER_RUN": "1"}
    worker = _prefect(
        "worker", "start", "--pool", "emps-local", "--type", "process", "--run-once", env=short
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
    assert query("select count(*) from raw.ingest_files") == [(1,)]
    finished = {r.id: r for r in asyncio.run(triggered_runs())}
    assert finished[runs[0].id].state.is_completed(), finished[runs[0].id].state

    async def successors() -> list:
        async with get_client() as client:
            later = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["ingest-sensor-drops"])
                )
            )
        automatic = ("AUTOMATION",)  # the safety net's runs are not the successor
        return [
            r
            for r in later
            if r.state.is_scheduled() and not (r.created_by and r.created_by.type in automatic)
        ]

    successor = asyncio.run(successors())
    assert successor, "the run did not hand over to a successor"
    assert successor[0].expected_start_time > finished[runs[0].id].end_time


def test_an_event_the_server_cannot_take_is_logged_and_the_watcher_goes_on(
    landing: Landing, ingest_db: Settings, monkeypatch, caplog
):
    """Prefect's server down (restarting, say): the watcher says so and keeps watching; the
    waiting file is announced again once the re-arm delay has passed."""
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    (landing.incoming / "early.csv").write_bytes(csv_bytes([reading("GEN-0001")]))
    watcher = LandingWatcher(ingest_db)
    with caplog.at_level(logging.WARNING, logger="emps.ingest.watch"):
        first = watcher.check()
    assert first is not None and first.new == 1
    assert "emps.file.arrived not sent" in caplog.text
    again = watcher.check(now=time.time() + ingest_db.ingest.watch_rearm_s + 1)
    assert again is not None and again.rearmed and again.waiting == 1


def test_a_failed_look_is_logged_and_the_watcher_goes_on(
    landing: Landing, ingest_db: Settings, caplog
):
    """An error while announcing (or scanning) ends neither `emps landing watch` nor the
    watcher `emps up` hosts: it is logged, and the next file is announced."""
    announced: list[Arrival] = []

    def emit(arrival: Arrival) -> None:
        announced.append(arrival)
        if len(announced) == 1:
            raise RuntimeError("the first announcement fails")

    watcher = LandingWatcher(ingest_db, emit=emit)
    (landing.incoming / "first.csv").write_bytes(csv_bytes([reading("GEN-0001")]))
    with caplog.at_level(logging.ERROR, logger="emps.ingest.watch"):
        thread = threading.Thread(target=watcher.run, kwargs={"max_s": 60})
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not announced and time.monotonic() < deadline:
                time.sleep(0.1)
            (landing.incoming / "second.csv").write_bytes(csv_bytes([reading("GEN-0002")]))
            while len(announced) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            watcher.stop()
            thread.join(timeout=10)
    assert "the first announcement fails" in caplog.text
    assert [a.examples for a in announced[:2]] == [["first.csv"], ["second.csv"]]


def test_a_live_run_holds_the_watcher_back(landing: Landing, ingest_db: Settings):
    """While an ingest run's heartbeat beats, a waiting file raises no event (the run takes it);
    once the run has ended, the file still waiting is announced at once."""
    events: list[Arrival] = []
    watcher = LandingWatcher(ingest_db, emit=events.append)
    beats: list[float] = []
    with Heartbeat(landing, "run-1", every_s=0.1, announce=lambda: beats.append(time.time())):
        assert run_alive(landing)
        (landing.incoming / "during.csv").write_bytes(csv_bytes([reading("GEN-0001")]))
        assert watcher.check() is None
        time.sleep(1.5)
        assert watcher.check() is None
    assert not run_alive(landing) and len(beats) >= 2
    arrival = watcher.check()
    assert arrival is not None and arrival.examples == ["during.csv"]


def test_the_watcher_stays_small():
    """The always-on watcher (and the metrics server beside it in `emps up`) load neither pandas
    nor Prefect: each would add tens of megabytes to a process that only looks at a folder."""
    code = (
        "import sys, emps.ingest.watch, emps.metrics; "
        "print(sorted(m for m in ('pandas', 'numpy', 'prefect') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert done.stdout.strip() == "[]"
