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
    monkeypatch.setattr(settings.services, "restart_limit", 2)
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
    monkeypatch.setattr(settings.services, "restart_limit", 2)
    monkeypatch.setattr(settings.services, "restart_reset_s", 0.5)
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

    monkeypatch.setattr(settings.services, "log_max_bytes", 4096)
    monkeypatch.setattr(settings.services, "log_keep", 2)
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


def test_the_embedded_databases_log_is_rotated_too(settings, monkeypatch, tmp_path):
    """PostgreSQL's own log (outside <home>/log) is rotated past EMPS_LOG_MAX_BYTES like the
    services' logs, its latest lines kept in <name>.1.gz."""
    import gzip

    from emps.embedded_pg import EmbeddedPostgres
    from emps.supervisor import Database

    monkeypatch.setattr(settings.services, "log_max_bytes", 1024)
    server = EmbeddedPostgres(tmp_path / "pg", port=1, superuser_password="pw-" * 8)
    server.logfile.parent.mkdir(parents=True, exist_ok=True)
    server.logfile.write_text("LOG:  checkpoint complete\n" * 100)
    supervisor = Supervisor(settings)
    supervisor.database = Database(server)
    assert server.logfile in supervisor.rotate_logs()
    assert server.logfile.stat().st_size == 0
    rotated = server.logfile.with_name(server.logfile.name + ".1.gz")
    assert gzip.decompress(rotated.read_bytes()).decode().count("checkpoint complete") == 100


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
        # Files other tests of the session left waiting (an API test's drops) may count too,
        # unless the watcher saw them before this test.
        waiting = [p for p in incoming.rglob("*") if p.is_file() and not p.name.startswith(".")]
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
        assert 1 <= event["payload"]["new_files"] <= len(waiting) + 1
        assert "dev-1.csv" in event["payload"]["examples"]
    finally:
        supervisor.stop_all()
        api.shutdown()
    assert not any(t.name == "landing-watcher" for t in threading.enumerate())
    assert (
        json.loads((settings.run_dir / "services.json").read_text())["services"][-1]["pid"] is None
    )

    workers = {s.name: s for s in app_services(settings, with_simulator=False)}
    assert workers["prefect-worker"].env["PREFECT_WORKER_QUERY_SECONDS"] == str(
        settings.services.worker_poll_s
    )
    monkeypatch.setattr(settings.ingest, "watch", False)
    assert landing_watcher(settings, supervisor.env) == []


def _poster(prefect):
    """POST to the Prefect API, answering its JSON."""

    def post(path: str, body: dict) -> dict:
        # A loaded Prefect server answers 503 when its database is busy; its own client retries.
        for _ in range(5):
            response = prefect.post(path, json=body)
            if response.status_code != 503:
                break
            time.sleep(1)
        response.raise_for_status()
        return response.json()

    return post


def _one_at_a_time(post, flow_name: str) -> tuple[str, str]:
    """(flow id, deployment id) of a new flow whose deployment runs one run at a time and
    cancels the runs that would start meanwhile, as ingest's does."""
    flow_id = post("/flows/", {"name": flow_name})["id"]
    deployment = post(
        "/deployments/",
        {
            "name": "one-at-a-time",
            "flow_id": flow_id,
            "concurrency_limit": 1,
            "concurrency_options": {"collision_strategy": "CANCEL_NEW"},
        },
    )["id"]
    return flow_id, deployment


def test_runs_left_in_flight_by_a_stopped_session_are_crashed_and_free_their_slot(
    prefect_server: str,
):
    """A run killed with the last `emps up` still holds its deployment's only slot (CANCEL_NEW):
    every new run is cancelled until the next start marks the orphan Crashed."""
    from emps import prefect_api
    from emps.supervisor import crash_orphaned_runs

    api = prefect_server
    prefect = prefect_api.client(api)  # the session server's credential, from the environment

    post = _poster(prefect)

    def propose(run_id: str, state_type: str) -> str:
        result = post(f"/flow_runs/{run_id}/set_state", {"state": {"type": state_type}})
        return result["state"]["type"]

    _, deployment = _one_at_a_time(post, "orphan-check")
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


def test_deployments_registered_before_the_package_move_are_registered_again(
    settings, prefect_server: str
):
    """An install made before the code moved into src/emps registered its deployments with
    entrypoints like flows/ingest.py: the next start registers each again, in place, with the
    entrypoint prefect.yaml declares now, a file that exists."""
    import hashlib

    import yaml

    from emps import prefect_api
    from emps.settings import PROJECT_ROOT
    from emps.supervisor import child_env, deploy

    spec_path = PROJECT_ROOT / "prefect.yaml"
    declared = yaml.safe_load(spec_path.read_text())["deployments"]
    prefect = prefect_api.client(prefect_server)
    post = _poster(prefect)
    before = {}
    for spec in declared:
        # As the old install registered them: each deployment under the flow of its name.
        flow_id = post("/flows/", {"name": spec["name"]})["id"]
        old = spec["entrypoint"].replace("src/emps/flows/", "flows/")
        assert old != spec["entrypoint"]
        body = {"name": spec["name"], "flow_id": flow_id, "entrypoint": old}
        before[spec["name"]] = post("/deployments/", body)["id"]
    env = {**child_env(settings), "PREFECT_API_URL": prefect_server}
    old_spec = spec_path.read_bytes().replace(b"src/emps/flows/", b"flows/")
    marker = settings.run_dir / "deployed.sha256"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(hashlib.sha256(old_spec + env["EMPS_TIMEZONE"].encode()).hexdigest())
    try:
        deploy(settings, env)
        for spec in declared:
            found = post("/deployments/filter", {"deployments": {"name": {"any_": [spec["name"]]}}})
            assert [d["id"] for d in found] == [before[spec["name"]]], spec["name"]
            assert found[0]["entrypoint"] == spec["entrypoint"]
            assert (PROJECT_ROOT / spec["entrypoint"].partition(":")[0]).is_file()
    finally:
        # Their event triggers would start runs in the other tests of this server's session.
        ids = set(before.values())
        for automation in post("/automations/filter", {}):
            if any(action.get("deployment_id") in ids for action in automation["actions"]):
                prefect.delete(f"/automations/{automation['id']}")
        for deployment in ids:
            prefect.delete(f"/deployments/{deployment}")


def test_the_prefect_server_is_told_to_delete_old_flow_runs(settings, monkeypatch):
    """`emps up` starts the Prefect server with its vacuum of flow runs (their task runs, logs
    and artifacts) on, at EMPS_PREFECT_RETENTION_DAYS, as Prefect itself reads the variables:
    a misspelt one would leave every run of every minute in its database for ever."""
    import json
    import subprocess

    from emps.supervisor import prefect_retention_env

    monkeypatch.setattr(settings.retention, "prefect_days", 3)
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


def test_a_killed_or_hung_database_is_restarted_with_its_data(settings, monkeypatch):
    """The embedded PostgreSQL is restarted when its postmaster is killed and when it stops
    answering, with every committed row; past its restart budget it is given up on (listed so
    in `emps status`), and watched again once someone starts it by hand."""
    import contextlib
    import json
    import shutil
    import signal
    import tempfile
    from pathlib import Path

    import psycopg

    from emps.embedded_pg import EmbeddedPostgres
    from emps.processes import free_port
    from emps.supervisor import Database

    monkeypatch.setattr(settings.services, "restart_limit", 2)
    # Not under pytest's tmp dir, which another session may make 0700 again at its start,
    # locking out the system user PostgreSQL runs as.
    home = Path(tempfile.mkdtemp(prefix="emps-pg-restart-"))
    server = EmbeddedPostgres(home / "pg", port=free_port(), superuser_password="pw-" * 8)
    server.start()
    supervisor = Supervisor(settings)
    supervisor.database = db = Database(server, started_at=time.monotonic())
    supervisor.db_probe_s, supervisor.db_probe_timeout_s, supervisor.db_unanswered_s = 0.2, 1, 1
    supervisor.runs_sweep_window_s = 0  # no Prefect server here

    def rows() -> int:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            return conn.execute("select count(*) from kept").fetchone()[0]

    def listed() -> dict:
        state = json.loads((settings.run_dir / "services.json").read_text())
        return state["services"][0]

    def back_after(action) -> int:
        """Do `action` to the running postmaster; the pid of the one watch() runs instead."""
        pid = server.status().pid
        action(pid)
        _watch_until(supervisor, lambda: server.status().pid not in (None, pid) or db.given_up)
        _watch_until(supervisor, lambda: server.answers() or db.given_up, timeout_s=30)
        return server.status().pid

    try:
        with psycopg.connect(server.admin_url(), autocommit=True) as conn:
            conn.execute("create table kept as select generate_series(1, 1000) as n")
        waiting = psycopg.connect(server.admin_url())  # a backend the kill orphans
        waiting.execute("select 1")

        killed = back_after(lambda pid: os.kill(pid, signal.SIGKILL))
        assert db.restarts == 1 and rows() == 1000
        assert listed() == {**listed(), "name": "postgresql", "pid": killed, "restarts": 1}

        hung = back_after(lambda pid: os.kill(pid, signal.SIGSTOP))  # alive, never answers
        assert hung != killed and db.restarts == 2 and rows() == 1000

        back_after(lambda pid: os.kill(pid, signal.SIGKILL))
        assert db.given_up and not server.status().running
        assert listed()["given_up"] and listed()["pid"] is None

        server.start()  # `emps db start`
        _watch_until(supervisor, lambda: not db.given_up, timeout_s=10)
        assert not db.given_up and db.restarts == 0 and listed()["pid"] == server.status().pid
        assert rows() == 1000
    finally:
        # Whatever state the test left it in (a stopped postmaster too): nothing stays behind.
        for pid in [server.status().pid, *server.leftover_processes()]:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.leftover_processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(home, ignore_errors=True)


def test_runs_whose_process_died_are_crashed_and_free_their_slot(prefect_server: str):
    """After a database outage, a flow run still Running whose process is gone (its end could
    not be recorded) is marked Crashed with its subflow runs, freeing its deployment's slot; a
    run whose process lives is left alone."""
    import subprocess

    from emps import prefect_api
    from emps.supervisor import crash_runs_whose_process_died

    prefect = prefect_api.client(prefect_server)

    post = _poster(prefect)

    def running(run_id: str, pid: int | None) -> None:
        for state_type in ("PENDING", "RUNNING"):
            post(f"/flow_runs/{run_id}/set_state", {"state": {"type": state_type}})
        if pid is not None:
            prefect.patch(f"/flow_runs/{run_id}", json={"infrastructure_pid": str(pid)})

    def state(run_id: str) -> str:
        return prefect.get(f"/flow_runs/{run_id}").json()["state"]["type"]

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    dead_pid = int(dead.stdout)
    flow_id, deployment = _one_at_a_time(post, "died-with-the-database")
    orphan = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    running(orphan, dead_pid)
    task_run = post(
        "/task_runs/",
        {"flow_run_id": orphan, "task_key": "subflow", "dynamic_key": "0", "name": "subflow"},
    )["id"]
    subflow = post("/flow_runs/", {"flow_id": flow_id, "parent_task_run_id": task_run})["id"]
    running(subflow, None)
    alive = post("/flow_runs/", {"flow_id": flow_id})["id"]
    running(alive, os.getpid())
    blocked = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    assert (
        post(f"/flow_runs/{blocked}/set_state", {"state": {"type": "PENDING"}})["state"]["type"]
        == "CANCELLED"
    )

    crash_runs_whose_process_died(prefect_server, os.environ["PREFECT_API_AUTH_STRING"])
    assert (state(orphan), state(subflow), state(alive)) == ("CRASHED", "CRASHED", "RUNNING")
    after = post(f"/deployments/{deployment}/create_flow_run", {})["id"]
    assert (
        post(f"/flow_runs/{after}/set_state", {"state": {"type": "PENDING"}})["state"]["type"]
        == "PENDING"
    )
    post(f"/flow_runs/{alive}/set_state", {"state": {"type": "COMPLETED"}})


_OUT = {"capture_output": True, "text": True, "check": True}


def test_the_api_runs_under_emps_up_is_listed_and_comes_back_after_a_crash(
    database, monkeypatch, capsys
):
    """`emps up`'s HTTP API is ready once /health says its database answers, its URL and OpenAPI
    page are printed and `emps status` lists it running, a killed API is started again, and
    stopping the platform stops it."""
    import json

    import httpx

    from emps.processes import free_port
    from emps.supervisor import app_services, print_status, print_urls

    monkeypatch.setattr(database.api, "port", free_port())
    supervisor = Supervisor(database)
    (api,) = [s for s in app_services(database, with_simulator=False) if s.name == "api"]

    def healthy() -> bool:
        try:
            return httpx.get(f"{api.url}/health", timeout=2).json()["database"] == "up"
        except httpx.HTTPError:
            return False

    try:
        supervisor.start(api)
        supervisor.wait_ready(api)
        assert healthy()
        assert "/api/v1/sensors/ingest" in httpx.get(f"{api.url}/openapi.json").text
        assert httpx.get(api.docs_url).status_code == 200
        print_urls(supervisor, None)
        assert f"api reference (OpenAPI): {api.url}/docs" in capsys.readouterr().out
        assert print_status(database) == 0
        listed = json.loads((database.run_dir / "services.json").read_text())["services"]
        assert {"name": "api", "url": api.url}.items() <= listed[-1].items()

        first = api.process
        first.kill()
        first.wait()
        _watch_until(supervisor, lambda: api.process is not first and healthy())
        assert api.restarts == 1 and healthy()
    finally:
        supervisor.stop_all()
    assert api.process.poll() is not None and not healthy()
    assert print_status(database) == 1
