"""`emps up`: start the whole platform, watch it, and stop it cleanly.

Order matters: the database first, then which fleet runs (a fleet pack's catalog is installed
before the migrations), then the servers other services talk to (Prefect, MLflow, the SMTP sink),
then the bootstrap (the pack's or simulated history, features, first champion), then the
deployments, the worker, the dashboard and, for the simulated fleet only, the simulator. Stopping
goes in reverse.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import httpx
from rich.console import Console
from rich.table import Table

from emps import processes
from emps.embedded_pg import EmbeddedPostgres
from emps.settings import PROJECT_ROOT, Settings, get_settings

console = Console()
T = TypeVar("T")
STATE_FILE = "services.json"


@dataclass
class Service:
    """A child process the supervisor owns."""

    name: str
    argv: list[str]
    url: str | None = None
    health_url: str | None = None
    ready_timeout_s: float = 300
    env: dict[str, str] = field(default_factory=dict)
    docs_url: str | None = None  # its reference for users (the API's OpenAPI page)
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    given_up: bool = False

    def log_path(self, settings: Settings) -> Path:
        return settings.log_dir / f"{self.name}.log"


@dataclass
class Hosted:
    """A small server `emps up` runs on threads of its own process instead of as a child.

    The SMTP sink, the metrics endpoint and the landing watcher each idle on a socket or a
    directory; as children they were three Python processes of 55-65 MB resident. `start`
    starts it and returns the function that stops it. The watcher logs a failed look at
    incoming/ and goes on (`LandingWatcher.run`).
    """

    name: str
    start: Callable[[], Callable[[], None]]
    url: str | None = None
    loggers: tuple[str, ...] = ()
    stop: Callable[[], None] | None = None

    def log_path(self, settings: Settings) -> Path:
        return settings.log_dir / f"{self.name}.log"


@dataclass
class Database:
    """The embedded PostgreSQL, when `emps up` runs it: watched and restarted like a child,
    though it is not one (pg_ctl detaches the postmaster, which outlives `emps up` when it ran
    before it).

    Down means its postmaster is gone, or no answer at all on its port for
    `Supervisor.db_unanswered_s`: a busy server (a long checkpoint or query) still answers,
    and one refusing connections while it starts or recovers is left to finish."""

    server: EmbeddedPostgres
    name: str = "postgresql"
    restarts: int = 0
    started_at: float = 0.0
    given_up: bool = False
    next_try_at: float = 0.0  # after a start that failed (a full disk, say), the next waits
    probed_at: float = 0.0
    unanswered_since: float | None = None
    # After a restart, for a few minutes: flow runs that died with it are looked for.
    sweep_until: float = 0.0
    swept_at: float = 0.0

    @property
    def url(self) -> str:
        return f"postgresql://{self.server.host}:{self.server.port}"

    def pid(self) -> int | None:
        status = self.server.status()
        return status.pid if status.running else None

    def log_path(self, settings: Settings) -> Path:
        return self.server.logfile


def child_env(settings: Settings) -> dict[str, str]:
    """The environment every child shares: our settings plus where Prefect and MLflow live and
    the Prefect API's credential (the auth string every Prefect client sends)."""
    from emps.credentials import load_secrets

    env = dict(os.environ)
    env.update(
        {
            "EMPS_HOME": str(settings.home),
            "EMPS_PG_PORT": str(settings.database.pg_port),
            "EMPS_PROJECT_ROOT": str(PROJECT_ROOT),
            # prefect.yaml's cron schedules read it (settings may come from .env instead).
            "EMPS_TIMEZONE": settings.timezone,
            "PREFECT_API_URL": f"http://127.0.0.1:{settings.services.prefect_port}/api",
            "PREFECT_API_AUTH_STRING": load_secrets(settings).prefect_auth,
            "PREFECT_HOME": str(settings.home / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_URL": f"http://127.0.0.1:{settings.services.prefect_port}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _bin(name: str) -> str:
    """A console script from this virtual environment."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def prefect_database_url(settings: Settings) -> str:
    if settings.services.prefect_database == "sqlite" or not settings.database.embedded:
        return f"sqlite+aiosqlite:///{settings.home / 'prefect' / 'prefect.db'}"
    from emps.db import prefect_database_url as on_embedded_server

    return on_embedded_server(settings)


def prefect_server_env(settings: Settings) -> dict[str, str]:
    """What makes the Prefect server refuse strangers: its auth string on every request (the
    UI asks for it too), CSRF tokens on every change, and cross-origin calls only from its own
    UI's origin."""
    from emps.credentials import load_secrets

    origins = [
        f"http://{host}:{settings.services.prefect_port}" for host in ("127.0.0.1", "localhost")
    ]
    return {
        "PREFECT_SERVER_API_AUTH_STRING": load_secrets(settings).prefect_auth,
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ",".join(origins),
    }


def prefect_retention_env(settings: Settings) -> dict[str, str]:
    """The Prefect server's vacuum of old flow runs (and of logs and artifacts left without
    one), besides its default vacuum of old events."""
    return {
        "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "events,flow_runs",
        "PREFECT_SERVER_SERVICES_DB_VACUUM_RETENTION_PERIOD": str(
            round(settings.retention.prefect_days * 86400)
        ),
    }


def server_services(settings: Settings) -> list[Service]:
    """Servers that must be up before the bootstrap: Prefect and MLflow."""
    prefect_env = {
        **prefect_server_env(settings),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_database_url(settings),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(settings.services.prefect_port),
        # Two connections kept per pool and five more at a burst (defaults: five and ten): each
        # PostgreSQL backend holds 15-60 MB resident of caches for Prefect's tables, and a
        # restart's burst opened fourteen.
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "2",
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "5",
        # Flow runs (a few a minute, with their task runs, logs and artifacts) are deleted after
        # EMPS_PREFECT_RETENTION_DAYS; Prefect vacuums only old events by default.
        **prefect_retention_env(settings),
    }
    return [
        Service(
            "prefect-server",
            [
                _bin("prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.services.prefect_port),
                "--analytics-off",
            ],
            url=f"http://127.0.0.1:{settings.services.prefect_port}",
            health_url=f"http://127.0.0.1:{settings.services.prefect_port}/api/health",
            env=prefect_env,
        ),
        Service(
            "mlflow",
            # MLflow's app in one process (`mlflow server` would add a second one).
            [_bin("emps"), "model", "server", "--port", str(settings.services.mlflow_port)],
            url=f"http://127.0.0.1:{settings.services.mlflow_port}",
            health_url=f"http://127.0.0.1:{settings.services.mlflow_port}/health",
        ),
    ]


def api_service(settings: Settings) -> Service:
    """The HTTP API (device ingest, OpenAPI at /docs). Ready once /health says its database
    answers (a 503 until then)."""
    url = f"http://127.0.0.1:{settings.api.port}"
    return Service(
        "api",
        [_bin("emps"), "api", "--port", str(settings.api.port)],
        url=url,
        health_url=f"{url}/health",
        docs_url=f"{url}/docs",
    )


def app_services(settings: Settings, with_simulator: bool) -> list[Service]:
    """Services that need the bootstrap done: the worker, the HTTP API, the dashboard, the
    simulated fleet."""
    services = [
        Service(
            "prefect-worker",
            env={
                # Flow-run logs as JSON lines (they carry flow_run_id: the correlation id), and
                # the platform's own `emps.*` loggers sent to the Prefect UI too.
                "PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER": "json",
                "PREFECT_LOGGING_HANDLERS_CONSOLE_FLOW_RUNS_FORMATTER": "json",
                "PREFECT_LOGGING_HANDLERS_CONSOLE_TASK_RUNS_FORMATTER": "json",
                "PREFECT_LOGGING_EXTRA_LOGGERS": "emps",
                # Every hop of drop -> ingest -> features -> score -> alert is a triggered run
                # that waits for the worker's next poll (Prefect's default: 10 s).
                "PREFECT_WORKER_QUERY_SECONDS": str(settings.services.worker_poll_s),
            },
            argv=[
                _bin("prefect"),
                "worker",
                "start",
                "--pool",
                "emps-local",
                "--type",
                "process",
                # Flow-run processes at once: the ingest run (building and scoring inside), an
                # alert run and a scheduled one; each is a Python process of 200-450 MB.
                "--limit",
                "3",
            ],
        ),
        api_service(settings),
        Service(
            "streamlit",
            streamlit_command(settings.services.streamlit_port),
            url=f"http://127.0.0.1:{settings.services.streamlit_port}",
            health_url=f"http://127.0.0.1:{settings.services.streamlit_port}/_stcore/health",
        ),
    ]
    if with_simulator:
        services.append(
            Service(
                "simulator",
                [
                    _bin("emps"),
                    "simulate",
                    "live",
                    "--equipment",
                    str(settings.simulator.equipment),
                    "--interval",
                    str(settings.simulator.live_interval_s),
                ],
            )
        )
    return services


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The dashboard server: the app and its session-cookie route (emps/dashboard/serve.py), for
    users rather than developers: no Deploy button, developer menu or tracebacks in the page."""
    return [
        _bin("streamlit"),
        "run",
        str(Path(__file__).resolve().parent / "dashboard" / "serve.py"),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "viewer",
        "--client.showErrorDetails",
        "type",
        "--server.fileWatcherType",
        "none",
    ]


def mail_and_metrics(settings: Settings, env: dict[str, str]) -> list[Hosted]:
    """Hosted before the bootstrap: the SMTP sink when configured (its flows send mail; never
    when EMPS_SMTP_HOST is a real relay) and /metrics."""
    from emps.alerting.mailbox import SINK_HOST, sink_port

    port = sink_port(settings)
    if port is None and settings.notifications.smtp_sink:
        console.print(
            f"Mail goes to {settings.notifications.smtp_host}:{settings.notifications.smtp_port} (EMPS_SMTP_HOST): no local "
            "SMTP sink started."
        )

    def metrics() -> Callable[[], None]:
        from emps.metrics import start

        server = start(
            settings,
            prefect_api=env["PREFECT_API_URL"],
            prefect_auth=env["PREFECT_API_AUTH_STRING"],
        )
        return server.shutdown

    hosted = [
        Hosted("metrics", metrics, url=f"http://127.0.0.1:{settings.services.metrics_port}/metrics")
    ]
    if port is not None:

        def smtp_sink() -> Callable[[], None]:
            from emps.alerting.mailbox import start_sink

            controller, _ = start_sink(settings.home / "mailbox", host=SINK_HOST, port=port)
            return controller.stop

        url = f"smtp://{SINK_HOST}:{port}"
        hosted.insert(0, Hosted("smtp-sink", smtp_sink, url=url, loggers=("mail.log",)))
    return hosted


def landing_watcher(settings: Settings, env: dict[str, str]) -> list[Hosted]:
    """Hosted after the bootstrap (the ingest deployment's trigger exists by then): files
    arriving start ingest within seconds (prefect.yaml's emps.file.arrived trigger)."""
    if not settings.ingest.watch:
        return []

    def watcher() -> Callable[[], None]:
        from emps.ingest.watch import LandingWatcher, emit_arrival

        api, auth = env["PREFECT_API_URL"], env["PREFECT_API_AUTH_STRING"]
        watching = LandingWatcher(settings, emit=lambda arrival: emit_arrival(arrival, api, auth))
        thread = threading.Thread(target=watching.run, name="landing-watcher", daemon=True)
        thread.start()

        def stop() -> None:
            watching.stop()
            thread.join(timeout=10)

        return stop

    return [Hosted("landing-watcher", watcher, loggers=("emps.ingest.watch",))]


def rotate_log(path: Path, max_bytes: int, keep: int) -> bool:
    """Rotate `path` once it is past `max_bytes`: its content compressed to <name>.1.gz (older
    ones shifted to .2.gz ... .<keep>.gz, the oldest dropped), then the file emptied in place.
    Its writers (children and handlers holding it in append mode) go on writing at its start;
    a line written between the copy and the emptying is lost (logrotate's copytruncate)."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}.gz")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}.gz"))
    rotated = path.with_name(f"{path.name}.1.gz")
    partial = rotated.with_suffix(".gz.tmp")
    with path.open("rb") as source, gzip.open(partial, "wb") as target:
        shutil.copyfileobj(source, target)
        os.truncate(path, 0)
    partial.replace(rotated)
    return True


class Supervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.services: list[Service] = []
        self.hosted: list[Hosted] = []
        self.stopping = False
        self.watching = False
        self.env = child_env(settings)
        self.fleet: str | None = None  # which fleet runs, for `emps status`
        self.log_check_s = 30.0  # how often watch() looks at the logs' sizes
        self.database: Database | None = None  # the embedded PostgreSQL, once started
        self.db_probe_s = 10.0  # how often watch() asks the database for an answer
        self.db_probe_timeout_s = 5  # ... and waits for it
        self.db_unanswered_s = 60.0  # no answer this long (its process alive): restarted
        self.runs_sweep_s = 15.0  # after a database restart, look for dead runs this often
        self.runs_sweep_window_s = 180.0  # ... for this long

    # -- children ------------------------------------------------------------------------------
    def start(self, service: Service) -> None:
        service.process = processes.start(
            service.argv,
            service.log_path(self.settings),
            {**self.env, **service.env},
            cwd=PROJECT_ROOT,
            new_session=True,  # Ctrl-C reaches us, and we stop the services in order
        )
        service.started_at = time.monotonic()
        if service not in self.services:
            self.services.append(service)
        self.write_state()

    def host(self, hosted: Hosted) -> None:
        """Start a hosted server on this process's threads; its loggers write to var/log/."""
        import logging

        path = hosted.log_path(self.settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        for name in hosted.loggers:
            logger = logging.getLogger(name)
            logger.setLevel(logging.INFO)
            logger.addHandler(handler)
        hosted.stop = hosted.start()
        self.hosted.append(hosted)
        self.write_state()

    def wait_ready(self, service: Service) -> None:
        if service.process is None:
            raise RuntimeError(f"{service.name} was never started")
        if service.health_url is None:
            time.sleep(0.5)
            if service.process.poll() is not None:
                raise RuntimeError(self._crash_message(service))
            return
        processes.wait_until_answers(
            service.name,
            service.process,
            service.health_url,
            service.log_path(self.settings),
            service.ready_timeout_s,
            stopping=lambda: self.stopping,
        )

    def _crash_message(self, service: Service) -> str:
        code = service.process.returncode if service.process else "?"
        return f"{service.name} exited with code {code}. {self._log_tail(service)}"

    def stop_all(self) -> None:
        for service in reversed(self.services):
            self._stop(service)
        for hosted in reversed(self.hosted):
            if hosted.stop is not None:
                hosted.stop()
                hosted.stop = None
                console.print(f"  stopped {hosted.name}")
        self.write_state()

    def _stop(self, service: Service, grace_s: float = 15) -> None:
        proc = service.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        console.print(f"  stopped {service.name}")

    def watch(self) -> None:
        """Restart a crashed child, or the embedded PostgreSQL when it is down (a few times; one
        that ran EMPS_RESTART_RESET_S since has its whole budget again), and say so; never lose
        one silently. Rotate the logs."""
        logs_checked = time.monotonic()
        while not self.stopping:
            if time.monotonic() - logs_checked >= self.log_check_s:
                logs_checked = time.monotonic()
                self.rotate_logs()
            # The database first: children that crashed while it was down start once it is up.
            if self.database is not None:
                self.watch_database(self.database)
            for service in self.services:
                proc = service.process
                if proc is None or service.given_up:
                    continue
                if proc.poll() is None:
                    self._ran_long_enough(service)
                    continue
                why = f"exited (code {proc.returncode})"
                if self._may_restart(service, why, partial(self._crash_message, service)):
                    self.start(service)
            time.sleep(1)

    def watch_database(self, db: Database) -> None:
        """One look at the embedded PostgreSQL: restart it when its postmaster is gone (killed,
        crashed) or has not answered for `db_unanswered_s`. A database given up on that runs
        again (started by hand: `emps db start`) is watched again."""
        now = time.monotonic()
        status = db.server.status()
        if db.given_up:
            if status.running:
                db.given_up, db.restarts, db.started_at = False, 0, now
                console.print(f"[green]{db.name} runs again (pid {status.pid}); watching it[/]")
                self.write_state()
            return
        why: str | None
        if not status.running:
            why = f"stopped (pid {status.pid} is gone)" if status.pid else "stopped"
        elif (why := self._unanswered(db, now)) is None:
            self._ran_long_enough(db)
            if now < db.sweep_until and now - db.swept_at >= self.runs_sweep_s:
                db.swept_at = now
                self._crash_dead_runs()
            return
        if now < db.next_try_at:
            return
        if not self._may_restart(db, why, lambda: self._log_tail(db)):
            return
        try:
            status = db.server.recover()
        except (RuntimeError, OSError) as exc:
            wait_s = min(60, 5 * 2 ** (db.restarts - 1))
            db.next_try_at = time.monotonic() + wait_s
            console.print(f"[red]{db.name} did not start: {exc}; trying again in {wait_s} s[/]")
        else:
            console.print(f"[green]{db.name} is back (pid {status.pid})[/]")
            db.sweep_until, db.swept_at = time.monotonic() + self.runs_sweep_window_s, 0.0
        db.started_at, db.unanswered_since = time.monotonic(), None
        self.write_state()

    def _crash_dead_runs(self) -> None:
        """Flow runs that died while the database was down still show Running, holding their
        deployment's slot (ingest's too): mark them Crashed. Their processes died, or reported
        a failure, during the outage; one that ends now reports itself, so this repeats for
        runs_sweep_window_s after the restart, until the Prefect server answers."""
        try:
            crash_runs_whose_process_died(
                self.env["PREFECT_API_URL"], self.env["PREFECT_API_AUTH_STRING"]
            )
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            console.print(f"  the Prefect server is not answering yet ({exc}); looking again")

    def _unanswered(self, db: Database, now: float) -> str | None:
        """Why a running database counts as down (no answer for db_unanswered_s), or None."""
        if now - db.probed_at >= self.db_probe_s:
            db.probed_at = now
            if db.server.answers(self.db_probe_timeout_s) is False:
                db.unanswered_since = db.unanswered_since or now
            else:
                db.unanswered_since = None
        if db.unanswered_since is None or now - db.unanswered_since < self.db_unanswered_s:
            return None
        return f"has not answered for {now - db.unanswered_since:.0f} s"

    def _ran_long_enough(self, unit: Service | Database) -> None:
        """Give a unit running for EMPS_RESTART_RESET_S since its last start its budget back."""
        running_s = time.monotonic() - unit.started_at
        if unit.restarts and running_s >= self.settings.services.restart_reset_s:
            unit.restarts = 0
            self.write_state()

    def _may_restart(
        self, unit: Service | Database, why: str, last_words: Callable[[], str]
    ) -> bool:
        """Count one more restart of a unit that is down, and say so; or, its budget spent,
        give up on it (`emps status` and the service_given_up operations rule report it)."""
        if unit.restarts >= self.settings.services.restart_limit:
            unit.given_up = True
            console.print(
                f"[red]{unit.name} keeps crashing; gave up after {unit.restarts} restarts. "
                f"{last_words()}[/]"
            )
            self.write_state()
            return False
        unit.restarts += 1
        console.print(
            f"[yellow]{unit.name} {why}; restarting ({unit.restarts}/"
            f"{self.settings.services.restart_limit}), log: {unit.log_path(self.settings)}[/]"
        )
        return True

    def _log_tail(self, unit: Service | Database) -> str:
        return processes.log_tail(unit.log_path(self.settings))

    def rotate_logs(self) -> list[Path]:
        """Rotate every log under <home>/log, and the embedded PostgreSQL's, past
        EMPS_LOG_MAX_BYTES; the ones rotated."""
        logs = sorted(self.settings.log_dir.glob("*.log"))
        if self.database is not None:
            logs.append(self.database.log_path(self.settings))
        return [
            log
            for log in logs
            if rotate_log(
                log, self.settings.services.log_max_bytes, self.settings.services.log_keep
            )
        ]

    def write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "fleet": self.fleet,
            "services": [
                {
                    "name": db.name,
                    "pid": db.pid(),
                    "url": db.url,
                    "restarts": db.restarts,
                    "given_up": db.given_up,
                    "log": str(db.log_path(self.settings)),
                }
                for db in ([self.database] if self.database is not None else [])
            ]
            + [
                {
                    "name": s.name,
                    "pid": s.process.pid if s.process else None,
                    "url": s.url,
                    "restarts": s.restarts,
                    "given_up": s.given_up,
                    "log": str(s.log_path(self.settings)),
                }
                for s in self.services
            ]
            + [
                {
                    "name": h.name,
                    "pid": os.getpid() if h.stop is not None else None,
                    "url": h.url,
                    "restarts": 0,
                    "given_up": False,
                    "log": str(h.log_path(self.settings)),
                }
                for h in self.hosted
            ],
        }
        path = self.settings.run_dir / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def _phase(name: str, action: Callable[[], T]) -> T:
    started = time.monotonic()
    console.print(f"[bold]…[/] {name}")
    result = action()
    console.print(f"[green]✓[/] {name} ({time.monotonic() - started:.1f} s)")
    return result


def _take_lock(settings: Settings):
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    handle = (settings.run_dir / "up.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def run_platform(
    with_simulator: bool | None = None,
    with_history: bool = True,
    settings: Settings | None = None,
    fleet: Path | None = None,
) -> int:
    """Run everything until Ctrl-C or SIGTERM. Returns the process exit code.

    `fleet` (or EMPS_FLEET_PACK): a fleet pack to run on instead of the simulated fleet.
    `with_simulator` None: the simulator runs unless a real fleet does (emps.fleet.running).
    """
    from emps.fleet.running import FleetRefused, fleet_banner, plan_fleet

    settings = settings or get_settings()
    lock = _take_lock(settings)
    if lock is None:
        console.print("[yellow]EMPS is already running (another `emps up` holds the lock).[/]")
        print_status(settings)
        return 0

    supervisor = Supervisor(settings)

    def _request_stop(signum, _frame):
        # While starting, a phase may block for minutes (dbt, training): interrupt it at once.
        # Once running, the watch loop sees the flag within a second.
        already = supervisor.stopping
        supervisor.stopping = True
        if not supervisor.watching and not already:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)

    from emps.db import embedded_server
    from emps.migrate import migrate

    server = embedded_server(settings) if settings.database.embedded else None
    pg_was_running = bool(server and server.status().running)
    started_at = time.monotonic()
    try:
        if server is not None:
            _phase("PostgreSQL", server.start)
            # Watched from now on, restarted when it dies (stopped at the end only when this
            # `emps up` started it).
            supervisor.database = Database(server, started_at=time.monotonic())
            supervisor.write_state()
            _phase("create the Prefect database", partial(_ensure_prefect_database, settings))
        plan = _phase(
            "fleet",
            partial(
                plan_fleet, settings, fleet or settings.fleet_pack, with_simulator, with_history
            ),
        )
        console.print(f"  {plan.description}", highlight=False, markup=False)
        settings = supervisor.settings = plan.settings
        _phase("migrations", lambda: migrate(settings))
        first_admin = _phase("first admin", lambda: _ensure_first_admin(settings))
        admin_note = first_admin.note if first_admin is not None else None
        if admin_note:
            console.print(f"  {admin_note}", style="bold", markup=False, highlight=False)
        # The servers start side by side (each spends most of its start importing and migrating).
        servers = server_services(settings)
        hosted = mail_and_metrics(settings, supervisor.env)
        names = [s.name for s in servers] + [h.name for h in hosted]
        _phase(
            "start " + ", ".join(names),
            lambda: _start_all_and_wait(supervisor, servers, hosted),
        )
        _phase(
            "crash the runs the last session left in flight",
            lambda: crash_orphaned_runs(
                supervisor.env["PREFECT_API_URL"], supervisor.env["PREFECT_API_AUTH_STRING"]
            ),
        )
        # Registering deployments (imports of every flow module, ~20 s) runs beside the
        # bootstrap, which needs none: its scoring raises its alerts itself.
        with ThreadPoolExecutor(max_workers=1) as registering:
            deployed = registering.submit(deploy, settings, supervisor.env)
            _phase(
                "bootstrap ("
                + ("fleet pack" if plan.real else "history")
                + ", features, first model, first scores)",
                lambda: _bootstrap(supervisor, plan.with_history, plan.pack),
            )
            note = _phase("register deployments from prefect.yaml", deployed.result)
        console.print(f"  {note}", markup=False, highlight=False)
        supervisor.fleet = fleet_banner(plan)
        for service in app_services(settings, plan.with_simulator):
            _phase(f"start {service.name}", partial(_start_and_wait, supervisor, service))
            if supervisor.stopping:
                return 130
        for watcher in landing_watcher(settings, supervisor.env):
            _phase(f"start {watcher.name}", partial(supervisor.host, watcher))
        console.print(f"\nEMPS is up in {time.monotonic() - started_at:.0f} s.")
        console.print(supervisor.fleet, highlight=False, markup=False)
        print_urls(supervisor, admin_note)
        console.print("Press Ctrl-C to stop everything.")
        supervisor.watching = True
        supervisor.watch()
        return 0
    except KeyboardInterrupt:
        console.print("[yellow]interrupted while starting[/]")
        return 130
    except FleetRefused as refused:
        console.print("[red]emps up: [/]", end="")
        console.print(str(refused), markup=False, highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # show the cause in the user's words, then stop what started
        console.print(f"[red]emps up failed: {exc}[/]")
        return 1
    finally:
        console.print("Stopping…")
        supervisor.stop_all()
        if server is not None and not pg_was_running:
            server.stop()
            console.print("  stopped PostgreSQL")
        (settings.run_dir / STATE_FILE).unlink(missing_ok=True)
        lock.close()


def bootstrap_args(with_history: bool, fleet: Path | None) -> list[str]:
    """The `emps` command line of the bootstrap `emps up` runs."""
    args = ["bootstrap", "--history" if with_history else "--no-history"]
    return args + (["--fleet", str(fleet)] if fleet is not None else [])


def _bootstrap(supervisor: Supervisor, with_history: bool, fleet: Path | None = None) -> None:
    """`emps bootstrap` in a child process: training and dbt leave ~500 MB of imports and heap
    behind, which the supervisor would otherwise hold for as long as the platform runs. Its flow
    runs report to our Prefect server (supervisor.env)."""
    command = [sys.executable, "-m", "emps.cli", *bootstrap_args(with_history, fleet)]
    done = subprocess.run(command, env={**os.environ, **supervisor.env}, check=False)
    if done.returncode == 2 and fleet is not None:
        from emps.fleet.running import FleetRefused

        raise FleetRefused(f"the fleet pack {fleet} was refused; the reason is above")
    if done.returncode != 0:
        raise RuntimeError(f"the bootstrap failed (exit {done.returncode}); its output is above")


def _start_all_and_wait(
    supervisor: Supervisor, services: list[Service], hosted: Sequence[Hosted] = ()
) -> None:
    for service in services:
        supervisor.start(service)
    for server in hosted:
        supervisor.host(server)
    for service in services:
        began = time.monotonic()
        supervisor.wait_ready(service)
        console.print(f"  {service.name} ready ({time.monotonic() - began:.1f} s more)")


def _start_and_wait(supervisor: Supervisor, service: Service) -> None:
    supervisor.start(service)
    supervisor.wait_ready(service)


def _ensure_prefect_database(settings: Settings) -> None:
    if settings.services.prefect_database != "postgres":
        return
    from emps.db import ensure_prefect_database

    ensure_prefect_database(settings)


def _ensure_first_admin(settings: Settings):
    from emps.users import ensure_first_admin

    return ensure_first_admin(settings)


IN_FLIGHT = ("PENDING", "RUNNING", "CANCELLING")


def crash_orphaned_runs(api: str, auth: str | None = None) -> int:
    """Mark the flow runs a previous `emps up` left pending, running or cancelling as Crashed;
    returns how many.

    Their processes died with that session (this session's worker has not started), but the
    Prefect server still counts them: each holds its deployment's concurrency slot, whose lease
    lived in the stopped server's memory, so with CANCEL_NEW every new ingest run would be
    cancelled for good. Crashing a run releases its slot. Files a killed ingest run had claimed
    are taken back by the next run (emps.ingest.pipeline's recovery).
    """
    from emps import prefect_api

    body = {"flow_runs": {"state": {"type": {"any_": list(IN_FLIGHT)}}}, "limit": 200}
    crashed = 0
    with prefect_api.client(api, auth) as prefect:
        for _ in range(50):  # 200 at a time; a crashed run leaves the filter
            found = prefect.post("/flow_runs/filter", json=body)
            found.raise_for_status()
            runs = found.json()
            if not runs:
                break
            for run in runs:
                state = {
                    "type": "CRASHED",
                    "name": "Crashed",
                    "message": "emps up stopped while this run was in flight",
                }
                response = prefect.post(
                    f"/flow_runs/{run['id']}/set_state", json={"state": state, "force": True}
                )
                response.raise_for_status()
                crashed += 1
    if crashed:
        console.print(f"  {crashed} run(s) left in flight by the last session marked Crashed")
    return crashed


def crash_runs_whose_process_died(api: str, auth: str | None = None) -> list[str]:
    """Mark Crashed the flow runs still in flight whose process is gone; returns their names.

    A run that dies while the Prefect server cannot write (its database down) stays Running:
    neither the run nor the worker could record its end, and the worker does not try again.
    Such a run holds its deployment's concurrency slot for good (ingest's: CANCEL_NEW, so no
    file would be ingested again). A subflow run has no process of its own: it goes with the
    run it ran in. A run whose process is unknown (pending, or started by hand) is left alone.
    """
    from emps import prefect_api

    body = {"flow_runs": {"state": {"type": {"any_": list(IN_FLIGHT)}}}, "limit": 200}
    crashed = []
    with prefect_api.client(api, auth) as prefect:
        found = prefect.post("/flow_runs/filter", json=body)
        found.raise_for_status()
        for run in found.json():
            pid = _run_process(prefect, run)
            if pid is None or _alive(pid):
                continue
            state = {
                "type": "CRASHED",
                "name": "Crashed",
                "message": f"its process (pid {pid}) ended while the database was down",
            }
            # Not forced: a run that ended and said so meanwhile keeps its own final state.
            response = prefect.post(f"/flow_runs/{run['id']}/set_state", json={"state": state})
            response.raise_for_status()
            if response.json().get("status") == "ACCEPT":
                crashed.append(run["name"])
    if crashed:
        console.print(
            f"  runs whose process died while the database was down: "
            f"{', '.join(crashed)}; marked Crashed"
        )
    return crashed


def _run_process(prefect: httpx.Client, run: dict, depth: int = 0) -> int | None:
    """The pid of the process a flow run runs in (a subflow's: its parent's), if known."""
    pid = run.get("infrastructure_pid")
    if pid:
        try:
            return int(str(pid).rsplit(":", 1)[-1])  # "pid", or "host:pid"
        except ValueError:
            return None
    if not run.get("parent_task_run_id") or depth >= 10:
        return None
    task_run = prefect.get(f"/task_runs/{run['parent_task_run_id']}")
    if task_run.status_code != 200:
        return None
    parent = prefect.get(f"/flow_runs/{task_run.json()['flow_run_id']}")
    return _run_process(prefect, parent.json(), depth + 1) if parent.status_code == 200 else None


def deploy(settings: Settings, env: dict[str, str]) -> str:
    """Create the process work pool and register every deployment declared in prefect.yaml;
    what was done, in a line for the console.

    Registering imports every flow module (~20 s on 2 cores), so it is skipped when prefect.yaml
    and the time zone its cron schedules run in (EMPS_TIMEZONE) are unchanged since the last
    start and the server still knows every deployment.
    """
    import hashlib

    import yaml

    spec_path = PROJECT_ROOT / "prefect.yaml"
    digest = hashlib.sha256(spec_path.read_bytes() + env["EMPS_TIMEZONE"].encode()).hexdigest()
    declared = len(yaml.safe_load(spec_path.read_text()).get("deployments") or [])
    marker = settings.run_dir / "deployed.sha256"
    api = env["PREFECT_API_URL"]
    if marker.exists() and marker.read_text() == digest:
        from emps import prefect_api

        try:
            with prefect_api.client(api, env["PREFECT_API_AUTH_STRING"], timeout=5) as prefect:
                known = prefect.post("/deployments/count", json={}).json()
        except (httpx.HTTPError, ValueError):
            known = -1
        if known >= declared:
            return f"{declared} deployments already registered (prefect.yaml unchanged)"
    pool = subprocess.run(
        [_bin("prefect"), "work-pool", "create", "emps-local", "--type", "process"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if pool.returncode != 0 and "already exists" not in (pool.stdout + pool.stderr):
        raise RuntimeError(f"could not create work pool emps-local: {pool.stdout}{pool.stderr}")
    result = subprocess.run(
        [_bin("prefect"), "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    log = settings.log_dir / "deploy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"prefect deploy failed; see {log}")
    marker.write_text(digest)
    return f"{declared} deployments registered from prefect.yaml"


def print_urls(supervisor: Supervisor, admin_note: str | None) -> None:
    from emps.credentials import secrets_path

    table = Table(title="EMPS services")
    table.add_column("service")
    table.add_column("address")
    table.add_column("log")
    units: list[Database | Service | Hosted] = [*supervisor.services, *supervisor.hosted]
    if supervisor.database is not None:
        units.insert(0, supervisor.database)
    for service in units:
        table.add_row(service.name, service.url or "—", str(service.log_path(supervisor.settings)))
    console.print(table)
    for service in supervisor.services:
        if service.docs_url:
            console.print(f"{service.name} reference (OpenAPI): {service.docs_url}", markup=False)
    console.print(
        f"The Prefect and MLflow UIs ask for the credentials in {secrets_path(supervisor.settings)} "
        "(`emps secrets show` prints them)."
    )
    if admin_note:
        console.print(admin_note, markup=False, highlight=False)


def print_status(settings: Settings | None = None) -> int:
    """Print what runs; exit code 0 when the platform is up, 1 when it is not."""
    settings = settings or get_settings()
    path = settings.run_dir / STATE_FILE
    if not path.exists():
        console.print("EMPS is not running (start it with `make up` or `emps up`).")
        return 1
    state = json.loads(path.read_text())
    table = Table(title=f"EMPS (supervisor pid {state['supervisor_pid']})")
    for column in ("service", "state", "pid", "address", "restarts"):
        table.add_column(column)
    all_up = True
    for svc in state["services"]:
        alive = svc["pid"] is not None and _alive(svc["pid"])
        all_up &= alive
        word = "running" if alive else ("gave up" if svc["given_up"] else "stopped")
        table.add_row(svc["name"], word, str(svc["pid"]), svc["url"] or "—", str(svc["restarts"]))
    console.print(table)
    if state.get("fleet"):
        console.print(state["fleet"], highlight=False, markup=False)
    return 0 if all_up else 1


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a dead one its parent has not reaped yet, a zombie, does
    not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc to ask: it exists
    return stat[stat.rfind(")") + 1 :].split()[:1] not in (["Z"], ["X"])
