"""`emps up` itself: a second start is refused politely; a crashed child is restarted."""

from __future__ import annotations

import sys
import time

from emps.supervisor import Service, Supervisor, _take_lock, run_platform


def test_second_emps_up_says_already_running(settings, capsys):
    """While one `emps up` holds the lock, another exits 0 saying so, starting nothing."""
    lock = _take_lock(settings)
    assert lock is not None
    try:
        assert run_platform(settings=settings) == 0
    finally:
        lock.close()
    assert "already running" in capsys.readouterr().out


def test_crashed_service_is_restarted_then_given_up(settings, monkeypatch):
    """A child that keeps dying is restarted up to the limit, then reported, not lost silently."""
    monkeypatch.setattr(settings, "restart_limit", 2)
    supervisor = Supervisor(settings)
    flaky = Service("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    supervisor.start(flaky)

    def stop_when_given_up():
        deadline = time.monotonic() + 60
        while not flaky.given_up and time.monotonic() < deadline:
            time.sleep(0.2)
        supervisor.stopping = True

    import threading

    watcher = threading.Thread(target=stop_when_given_up)
    watcher.start()
    supervisor.watch()
    watcher.join()
    assert flaky.restarts == 2 and flaky.given_up
    assert "flaky" in (settings.run_dir / "services.json").read_text()


def test_landing_watcher_runs_unless_switched_off(settings, monkeypatch):
    """`emps up` runs the landing watcher (file arrival starts ingest) unless
    EMPS_INGEST_WATCH=false, and its worker polls for triggered runs every worker_poll_s."""
    from emps.supervisor import app_services

    services = {s.name: s for s in app_services(settings, with_simulator=False)}
    assert services["landing-watcher"].argv[-2:] == ["landing", "watch"]
    assert services["prefect-worker"].env["PREFECT_WORKER_QUERY_SECONDS"] == str(
        settings.worker_poll_s
    )
    monkeypatch.setattr(settings, "ingest_watch", False)
    assert "landing-watcher" not in {s.name for s in app_services(settings, False)}
