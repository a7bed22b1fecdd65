"""`emps up` itself: a second start is refused politely; a crashed child is restarted; the small
servers it hosts on its own threads run and stop with it."""

from __future__ import annotations

import os
import sys
import threading
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


def _watch_until(supervisor: Supervisor, done, timeout_s: float = 60) -> None:
    """Run supervisor.watch() until done() holds (or the timeout), then stop it."""
    supervisor.stopping = False

    def stop_when_done():
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
        supervisor.stopping = True

    watcher = threading.Thread(target=stop_when_done)
    watcher.start()
    supervisor.watch()
    watcher.join()


def test_crashed_service_is_restarted_then_given_up(settings, monkeypatch):
    """A child that keeps dying is restarted up to the limit, then reported, not lost silently."""
    monkeypatch.setattr(settings, "restart_limit", 2)
    supervisor = Supervisor(settings)
    flaky = Service("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"])
    supervisor.start(flaky)
    _watch_until(supervisor, lambda: flaky.given_up)
    assert flaky.restarts == 2 and flaky.given_up
    assert "flaky" in (settings.run_dir / "services.json").read_text()


def test_a_service_that_ran_long_enough_gets_its_restart_budget_back(
    settings, monkeypatch, tmp_path
):
    """A child that crashes now and then, after running longer than EMPS_RESTART_RESET_S each
    time, is restarted every time: the limit is for crash loops, not for a year of uptime."""
    monkeypatch.setattr(settings, "restart_limit", 2)
    monkeypatch.setattr(settings, "restart_reset_s", 0.5)
    starts = tmp_path / "starts"
    code = f"import pathlib, sys, time; pathlib.Path({str(starts)!r}).open('a').write('x'); "
    code += "time.sleep(1); sys.exit(3)"
    supervisor = Supervisor(settings)
    sometimes = Service("sometimes", [sys.executable, "-c", code])
    supervisor.start(sometimes)
    started = lambda: len(starts.read_text()) if starts.exists() else 0  # noqa: E731
    _watch_until(supervisor, lambda: started() >= 5 or sometimes.given_up)
    sometimes.process.kill()
    sometimes.process.wait()
    assert started() >= 5 and not sometimes.given_up


def test_logs_past_their_size_are_rotated_and_the_service_writes_on(settings, monkeypatch):
    """A service log past EMPS_LOG_MAX_BYTES is compressed to <name>.log.1.gz and emptied;
    the service goes on writing into it; at most EMPS_LOG_KEEP rotated files stay."""
    import gzip

    monkeypatch.setattr(settings, "log_max_bytes", 4096)
    monkeypatch.setattr(settings, "log_keep", 2)
    code = "import sys, time\nfor i in range(100000):\n"
    code += "    print(f'line {i:06d} ' + 'x' * 60, flush=True); time.sleep(0.002)"
    supervisor = Supervisor(settings)
    supervisor.log_check_s = 0.2
    chatty = Service("chatty", [sys.executable, "-c", code])
    log = chatty.log_path(settings)
    log.unlink(missing_ok=True)
    supervisor.start(chatty)
    _watch_until(supervisor, lambda: log.with_name("chatty.log.2.gz").exists())
    _watch_until(supervisor, lambda: log.exists() and log.stat().st_size > 200, timeout_s=10)
    chatty.process.kill()
    chatty.process.wait()
    rotated = [log.with_name(f"chatty.log.{n}.gz") for n in (1, 2)]
    assert all(path.exists() for path in rotated)
    assert not log.with_name("chatty.log.3.gz").exists()
    newer, older = (gzip.decompress(path.read_bytes()).decode().splitlines() for path in rotated)
    live = log.read_text().splitlines()
    assert older[0].startswith("line ") and newer[0].startswith("line ")
    # Oldest to newest: .2.gz, then .1.gz, then the live log, each later than the last.
    assert older[-1] < newer[0] and newer[-1] < live[-1]


def test_landing_watcher_runs_unless_switched_off(settings, monkeypatch):
    """`emps up` runs the landing watcher (file arrival starts ingest) on its own threads unless
    EMPS_INGEST_WATCH=false: a file dropped into incoming/ reaches the Prefect API as an
    emps.file.arrived event (with the API's credential and a CSRF token), `emps status` lists
    the watcher, and stopping ends it."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from emps.credentials import basic_auth_header
    from emps.supervisor import app_services, landing_watcher

    received: list[tuple[str, list, dict]] = []

    class Events(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - Prefect's CSRF token endpoint
            body = json.dumps({"token": "csrf-1", "client": "x", "expiration": None}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body), dict(self.headers)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    api = ThreadingHTTPServer(("127.0.0.1", 0), Events)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    supervisor = Supervisor(settings)
    supervisor.env["PREFECT_API_URL"] = f"http://127.0.0.1:{api.server_address[1]}/api"
    try:
        (hosted,) = landing_watcher(settings, supervisor.env)
        supervisor.host(hosted)
        listed = json.loads((settings.run_dir / "services.json").read_text())["services"]
        assert {"name": "landing-watcher", "pid": os.getpid()}.items() <= listed[-1].items()
        incoming = settings.landing_dir / "incoming"
        (incoming / ".dev-1.csv.part").write_text("equipment_id\n")
        (incoming / ".dev-1.csv.part").rename(incoming / "dev-1.csv")
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received, "no event reached the Prefect API"
        path, (event,), headers = received[0]
        assert path == "/api/events" and event["event"] == "emps.file.arrived"
        # With the Prefect server's credential and a CSRF token, as the server requires.
        assert headers["Authorization"] == basic_auth_header(
            supervisor.env["PREFECT_API_AUTH_STRING"]
        )
        assert headers["Prefect-Csrf-Token"] == "csrf-1"
        assert event["payload"]["new_files"] == 1 and event["payload"]["examples"] == ["dev-1.csv"]
    finally:
        supervisor.stop_all()
        api.shutdown()
    assert not any(t.name == "landing-watcher" for t in threading.enumerate())
    assert (
        json.loads((settings.run_dir / "services.json").read_text())["services"][-1]["pid"] is None
    )

    workers = {s.name: s for s in app_services(settings, with_simulator=False)}
    assert workers["prefect-worker"].env["PREFECT_WORKER_QUERY_SECONDS"] == str(
        settings.worker_poll_s
    )
    monkeypatch.setattr(settings, "ingest_watch", False)
    assert landing_watcher(settings, supervisor.env) == []


def test_runs_left_in_flight_by_a_stopped_session_are_crashed_and_free_their_slot(
    prefect_server: str,
):
    """A run killed with the last `emps up` still holds its deployment's only slot (CANCEL_NEW):
    every new run is cancelled until the next start marks the orphan Crashed."""
    from emps import prefect_api
    from emps.supervisor import crash_orphaned_runs

    api = prefect_server
    prefect = prefect_api.client(api)  # the session server's credential, from the environment

    def post(path: str, body: dict) -> dict:
        response = prefect.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def propose(run_id: str, state_type: str) -> str:
        result = post(f"/flow_runs/{run_id}/set_state", {"state": {"type": state_type}})
        return result["state"]["type"]

    flow_id = post("/flows/", {"name": "orphan-check"})["id"]
    deployment = post(
        "/deployments/",
        {
            "name": "one-at-a-time",
            "flow_id": flow_id,
            "concurrency_limit": 1,
            "concurrency_options": {"collision_strategy": "CANCEL_NEW"},
        },
    )["id"]
    orphan = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    assert propose(orphan, "PENDING") == "PENDING"
    assert propose(orphan, "RUNNING") == "RUNNING"
    # ... and its process dies with the session: the next run is cancelled.
    blocked = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    assert propose(blocked, "PENDING") == "CANCELLED"

    assert crash_orphaned_runs(api, os.environ["PREFECT_API_AUTH_STRING"]) >= 1
    state = prefect.get(f"/flow_runs/{orphan}").json()["state"]
    assert state["type"] == "CRASHED" and "emps up stopped" in state["message"]
    after = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    assert propose(after, "PENDING") == "PENDING"


def test_the_prefect_server_is_told_to_delete_old_flow_runs(settings, monkeypatch):
    """`emps up` starts the Prefect server with its vacuum of flow runs (their task runs, logs
    and artifacts) on, at EMPS_PREFECT_RETENTION_DAYS, as Prefect itself reads the variables:
    a misspelt one would leave every run of every minute in its database for ever."""
    import json
    import subprocess

    from emps.supervisor import prefect_retention_env

    monkeypatch.setattr(settings, "prefect_retention_days", 3)
    code = (
        "import json; from prefect.settings import get_current_settings; "
        "v = get_current_settings().server.services.db_vacuum; "
        "print(json.dumps([sorted(v.enabled_vacuum_types), v.retention_period.total_seconds()]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_SERVICES")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, **prefect_retention_env(settings)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds, seconds = json.loads(out.strip().splitlines()[-1])
    assert "flow_runs" in kinds and "events" in kinds
    assert seconds == 3 * 86400
