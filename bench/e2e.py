"""Drop-to-email latency, memory and 10k keep-up of the whole platform, run as a user runs it.

    uv run python bench/e2e.py [--minutes 10] [--equipment 1000] [--big-equipment 10000]
                               [--big-minutes 5] [--history-equipment 60] [--history-days 60]

Starts `python -m emps.cli up --no-simulator` in a fresh temporary home on free ports (the first
start backfills --history-equipment x --history-days of 10-minute history, builds the features
and trains a first champion with EMPS_ML_N_ESTIMATORS trees: the smallest history that still
trains a model that recognises a failing generator), then, against that one running platform:

1. scheduled: the fleet simulator (`emps simulate live`) at --equipment drops a file per device
   per minute; ingest runs on its one-minute schedule only (no landing watcher);
2. arrival: `emps up` restarted with EMPS_INGEST_WATCH on (the simulator keeps dropping while
   it restarts: the later start's time is reported), so its landing watcher's emps.file.arrived
   events also start ingest;
3. keep-up: the simulator at --big-equipment with the watcher, for --big-minutes: the landing
   backlog sampled just before each minute's drop must not grow, nor the oldest file's wait.

The simulator is started by the bench, not by `emps up`, so the bootstrap can be sized apart from
the live fleet; it is counted as a platform process. In phases 1 and 2, every --inject-every
seconds (at a random second of the minute) a new registered generator drops a three-day
backlog ending in a bearing failure, which must raise
a HIGH or CRITICAL alert; its latency is from the file's rename into incoming/ to the alert
email's arrival in the SMTP sink's mailbox (the .eml file's mtime). Memory is the summed RSS of
every platform process (the supervisor's tree, PostgreSQL's, the simulator's),
sampled every second; PSS (shared pages split between processes) every 10 s.

Last line: {"bench": "e2e", "scheduled_p95_s": ..., "arrival_p95_s": ..., "peak_rss_mb": ...,
"keeps_up_10k": true|false, ...}. Every process started is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import email
import email.policy
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from emps.processes import free_port
from emps.simulator.drops import runaway_wear_rows

ROOT = Path(__file__).resolve().parent.parent
console = Console(stderr=True)
SITE = "north-ridge"
BENCH_PREFIX = "GEN-BENCH-"
EMAIL_GRACE_S = 240


def drop_csv(incoming: Path, name: str, rows: list[dict]) -> float:
    """Write like a device (temporary name, then rename); returns the rename's time."""
    incoming.mkdir(parents=True, exist_ok=True)  # before the first ingest run or device
    partial = incoming / f".{name}.part"
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    partial.rename(incoming / name)
    return time.time()


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 1)


@dataclass
class Platform:
    home: Path
    env: dict[str, str]
    output: Path
    up: subprocess.Popen | None = None
    extras: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def incoming(self) -> Path:
        return self.home / "landing" / "incoming"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "emps.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=check,
        )

    def start_up(self) -> None:
        self.up = subprocess.Popen(
            [sys.executable, "-m", "emps.cli", "up", "--no-simulator"],
            env=self.env,
            cwd=ROOT,
            stdout=self.output.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_extra(self, name: str, *args: str) -> None:
        log = self.home / "log" / f"bench-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        prefect = f"http://127.0.0.1:{self.env['EMPS_PREFECT_PORT']}"
        self.extras[name] = subprocess.Popen(
            [sys.executable, "-m", "emps.cli", *args],
            # What `emps up` gives its own children: the platform's Prefect server.
            env={**self.env, "PREFECT_API_URL": f"{prefect}/api", "PREFECT_UI_URL": prefect},
            cwd=ROOT,
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop_extra(self, name: str) -> None:
        proc = self.extras.pop(name, None)
        if proc is not None:
            _stop_group(proc, grace_s=30)

    def processes(self) -> list[psutil.Process]:
        """Every live process of the platform: the supervisor's tree, PostgreSQL's, the extras."""
        roots = [p.pid for p in [self.up, *self.extras.values()] if p and p.poll() is None]
        for pidfile in (self.home / "pg").rglob("postmaster.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(pidfile.read_text().split()[0])
                if pid > 0:  # negative while initdb runs a standalone backend
                    roots.append(pid)
        found: dict[int, psutil.Process] = {}
        for pid in roots:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    found[proc.pid] = proc
            except (psutil.Error, ValueError):
                continue
        return list(found.values())

    def stop_up(self) -> None:
        """Ctrl-C to `emps up`, as a user stops it (the extras keep running)."""
        if self.up is not None:
            _stop_group(self.up, grace_s=180, sig=signal.SIGINT)
            self.up = None

    def stop(self) -> None:
        for name in list(self.extras):
            self.stop_extra(name)
        if self.up is not None:
            _stop_group(self.up, grace_s=180, sig=signal.SIGINT)
        # Whatever survived (a killed supervisor leaves PostgreSQL, which runs detached).
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                proc.kill()
        # Not this bench, nor the `uv run` above it: with --home their command lines name the home.
        ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.pid not in ours and str(self.home) in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            except psutil.Error:
                pass


def _stop_group(proc: subprocess.Popen, grace_s: float, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def process_label(proc: psutil.Process) -> str:
    """What a platform process is, for the peak's breakdown: `emps up`'s service names."""
    try:
        args = proc.cmdline()
    except psutil.Error:
        return "?"
    line = " ".join(args)
    if "postgres" in line:
        return "postgresql"
    if "prefect.engine" in line:
        return "flow runs"
    for marker, label in (
        ("prefect server", "prefect-server"),
        ("prefect worker", "prefect-worker"),
        ("streamlit", "streamlit"),
        ("model server", "mlflow"),
        ("mlflow", "mlflow"),
    ):
        if marker in line:
            return label
    if "emps" in line:
        words = [a for a in args if not a.startswith("-") and "/" not in a and not a.isdigit()]
        return "emps " + " ".join(
            words[words.index("emps.cli") + 1 :] if "emps.cli" in words else words[-2:]
        )
    return args[0].rsplit("/", 1)[-1] if args else "?"


def command_line(proc: psutil.Process, width: int = 90) -> str:
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    return line if len(line) <= width else line[: width - 1] + "…"


def print_peak_processes(procs: list[tuple[str, float, str]]) -> None:
    table = Table(title="Processes at the 1k peak (RSS)")
    for column in ("service", "MB", "command"):
        table.add_column(column, justify="right" if column == "MB" else "left")
    for label, mb, line in procs:
        table.add_row(label, f"{mb:.0f}", line)
    console.print(table)


class MemorySampler(threading.Thread):
    """Sums the RSS of every platform process each second; PSS every 10 s. Peaks per label,
    and what each service held at the RSS peak."""

    def __init__(self, platform: Platform):
        super().__init__(daemon=True)
        self.platform = platform
        self.label = "startup"
        self.peak_rss: dict[str, float] = {}
        self.peak_pss: dict[str, float] = {}
        self.peak_parts: dict[str, dict[str, float]] = {}
        # Every process at the RSS peak: (service, RSS MB, command line), largest first.
        self.peak_procs: dict[str, list[tuple[str, float, str]]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        tick = 0
        while not self.done.wait(1.0):
            procs = self.platform.processes()
            rss = pss = 0
            parts: dict[str, float] = {}
            listed: list[tuple[str, float, str]] = []
            for proc in procs:
                try:
                    if tick % 10 == 0:
                        info = proc.memory_full_info()
                        pss += info.pss
                    else:
                        info = proc.memory_info()
                except psutil.Error:
                    continue
                rss += info.rss
                label = process_label(proc)
                parts[label] = parts.get(label, 0.0) + info.rss / 2**20
                listed.append((label, info.rss / 2**20, command_line(proc)))
            mb = rss / 2**20
            if mb > self.peak_rss.get(self.label, 0.0):
                self.peak_rss[self.label] = mb
                self.peak_parts[self.label] = {k: round(v) for k, v in sorted(parts.items())}
                self.peak_procs[self.label] = sorted(listed, key=lambda p: -p[1])
            if tick % 10 == 0:
                self.peak_pss[self.label] = max(self.peak_pss.get(self.label, 0.0), pss / 2**20)
            tick += 1


class Mailbox:
    """Finds the first alert email of each bench generator in the SMTP sink's mailbox."""

    def __init__(self, path: Path):
        self.path = path
        self.seen: set[str] = set()
        self.first: dict[str, float] = {}

    def poll(self) -> None:
        if not self.path.exists():
            return
        for eml in self.path.glob("*.eml"):
            if eml.name in self.seen:
                continue
            self.seen.add(eml.name)
            try:
                message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
                arrived = eml.stat().st_mtime
            except OSError:
                self.seen.discard(eml.name)
                continue
            subject = str(message["Subject"] or "")
            start = subject.find(BENCH_PREFIX)
            if start < 0:
                continue
            equipment = subject[start : start + len(BENCH_PREFIX) + 4]
            self.first[equipment] = min(self.first.get(equipment, arrived), arrived)


@dataclass
class Injection:
    equipment_id: str
    dropped_at: float


def wait_up(platform: Platform, timeout_s: float, what: str = "first start") -> float:
    began = time.monotonic()
    offset = platform.output.stat().st_size if platform.output.exists() else 0
    platform.start_up()
    with console.status(f"emps up: {what}") as status:
        while True:
            text = platform.output.read_bytes()[offset:].decode(errors="replace")
            if "EMPS is up" in text:
                return time.monotonic() - began
            if platform.up.poll() is not None:
                raise RuntimeError(f"emps up exited:\n{text[-4000:]}")
            if time.monotonic() - began > timeout_s:
                raise RuntimeError(f"emps up not up after {timeout_s:.0f} s:\n{text[-4000:]}")
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                status.update(f"emps up: {lines[-1][:100]}")
            time.sleep(2)


def wait_for_empty_incoming(platform: Platform, timeout_s: float) -> None:
    """Let the files dropped while the platform restarted be ingested before measuring."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(p for p in platform.incoming.glob("*") if not p.name.startswith(".")):
            return
        time.sleep(2)
    waiting = sum(1 for p in platform.incoming.glob("*") if not p.name.startswith("."))
    console.print(f"[yellow]{waiting} files still wait {timeout_s:.0f} s after the restart[/]")


def latency_phase(
    name: str,
    platform: Platform,
    mailbox: Mailbox,
    ids: list[str],
    minutes: float,
    inject_every_s: float,
) -> dict:
    """Drop a failing generator's backlog every ~inject_every_s for `minutes`; wait for mail."""
    rng = random.Random(name)
    injections: list[Injection] = []
    began = time.monotonic()
    duration = minutes * 60
    next_drop = began + rng.uniform(5, inject_every_s)
    columns = [
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(name, total=duration, note="")
        while time.monotonic() - began < duration:
            now = time.monotonic()
            if now >= next_drop and ids:
                equipment = ids.pop(0)
                rows = runaway_wear_rows(
                    equipment, datetime.now(UTC).replace(second=0, microsecond=0)
                )
                dropped = drop_csv(platform.incoming, f"{equipment}-backlog.csv", rows)
                injections.append(Injection(equipment, dropped))
                # Uniform over the minute, so the schedule's phase is sampled fairly.
                next_drop = now + inject_every_s * rng.uniform(0.6, 1.4)
            mailbox.poll()
            _check_alive(platform)
            got = sum(1 for i in injections if i.equipment_id in mailbox.first)
            progress.update(
                task,
                completed=min(time.monotonic() - began, duration),
                note=f"{len(injections)} dropped, {got} emailed",
            )
            time.sleep(1)
        progress.update(task, completed=duration)
        task2 = progress.add_task(f"{name}: last emails", total=len(injections), note="")
        deadline = time.monotonic() + EMAIL_GRACE_S
        while time.monotonic() < deadline:
            mailbox.poll()
            got = sum(1 for i in injections if i.equipment_id in mailbox.first)
            progress.update(task2, completed=got, note=f"{got}/{len(injections)} emailed")
            if got == len(injections):
                break
            _check_alive(platform)
            time.sleep(1)
    latencies = [
        mailbox.first[i.equipment_id] - i.dropped_at
        for i in injections
        if i.equipment_id in mailbox.first
    ]
    stages = stage_latencies(platform, [i.equipment_id for i in injections])
    return {
        **stages,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "max_s": round(max(latencies), 1) if latencies else None,
        "samples": len(latencies),
        "missing": len(injections) - len(latencies),
        "minutes": round((time.monotonic() - began) / 60, 1),
    }


def owner_url(platform: Platform) -> str:
    """The platform database as its owner, with the password `emps up` generated (what
    `emps secrets show --database` prints)."""
    secrets = json.loads((platform.home / "secrets.json").read_text())
    password = secrets["database"]["postgres"]
    return f"postgresql://postgres:{password}@127.0.0.1:{platform.env['EMPS_PG_PORT']}/emps"


def registered_bench_generators(platform: Platform) -> int:
    import psycopg

    with psycopg.connect(owner_url(platform), autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from raw.equipment where equipment_id like %s", (BENCH_PREFIX + "%",)
        ).fetchone()
    return int(row[0])


def stage_latencies(platform: Platform, equipment_ids: list[str]) -> dict:
    """Where the time went: from each drop to its readings loaded, its prediction written and
    its alert opened (p50 / p95 seconds), read from the ledger, ops.predictions and ops.alerts."""
    import psycopg

    url = owner_url(platform)
    query = """
        select f.received_at,
               f.finished_at,
               (select min(p.predicted_at) from ops.predictions p
                 where p.equipment_id = e.id and p.severity in ('HIGH', 'CRITICAL')),
               (select min(a.created_at) from ops.alerts a where a.equipment_id = e.id)
          from unnest(%s::text[]) as e(id)
          join raw.ingest_files f on f.file_name = e.id || '-backlog.csv'
    """
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(query, (equipment_ids,)).fetchall()
    except psycopg.Error as exc:
        return {"stages_error": str(exc).splitlines()[0]}
    result = {}
    for index, stage in ((1, "loaded"), (2, "predicted"), (3, "alerted")):
        seconds = [(row[index] - row[0]).total_seconds() for row in rows if row[index]]
        result[f"{stage}_p50_s"] = percentile(seconds, 50)
        result[f"{stage}_p95_s"] = percentile(seconds, 95)
    return result


def keep_up_phase(platform: Platform, equipment: int, minutes: float) -> dict:
    """Run the simulator at `equipment` and sample the landing backlog before each drop."""
    platform.start_extra("simulator-big", "simulate", "live", "--equipment", str(equipment))
    samples: list[tuple[float, int, float]] = []  # (elapsed, waiting files, oldest wait s)
    before_drop: list[int] = []
    began = time.monotonic()
    duration = minutes * 60
    columns = [
        TextColumn(f"[bold]keep-up {equipment:,}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    last_minute = None
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("keep-up", total=duration, note="")
        while time.monotonic() - began < duration:
            _check_alive(platform)
            now = time.time()
            waiting, oldest = _landing_backlog(platform)
            samples.append((time.monotonic() - began, waiting, oldest))
            minute = int(now // 60)
            # Just before the simulator's next drop, the landing zone should be (nearly) empty.
            if now % 60 >= 55 and minute != last_minute:
                before_drop.append(waiting)
                last_minute = minute
            progress.update(
                task,
                completed=min(time.monotonic() - began, duration),
                note=f"{waiting:,} files waiting, oldest {oldest:.0f} s",
            )
            time.sleep(2)
        progress.update(task, completed=duration)
    platform.stop_extra("simulator-big")
    second_half = [s for s in samples if s[0] >= duration / 2]
    max_wait = max((s[2] for s in second_half), default=0.0)
    # Keeping up: what waits before each drop does not grow, and no file waits two minutes.
    settled = before_drop[1:]  # the first minute includes registering the fleet
    growing = len(settled) >= 2 and settled[-1] > max(settled[0], equipment // 20)
    return {
        "keeps_up": bool(settled) and not growing and max_wait < 120,
        "backlog_before_drop": before_drop,
        "max_oldest_wait_s_second_half": round(max_wait, 1),
        "max_waiting_files": max((s[1] for s in samples), default=0),
    }


def _landing_backlog(platform: Platform) -> tuple[int, float]:
    now = time.time()
    waiting, oldest = 0, 0.0
    for folder in ("incoming", "processing"):
        try:
            with os.scandir(platform.home / "landing" / folder) as scan:
                for entry in scan:
                    if entry.name.startswith("."):
                        continue
                    try:
                        age = now - entry.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    waiting += 1
                    oldest = max(oldest, age)
        except FileNotFoundError:
            continue
    return waiting, oldest


def _check_alive(platform: Platform) -> None:
    if platform.up is not None and platform.up.poll() is not None:
        raise RuntimeError(f"emps up exited:\n{platform.output.read_text()[-4000:]}")
    for name, proc in platform.extras.items():
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {platform.home}/log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10, help="Minutes per latency phase")
    parser.add_argument("--equipment", type=int, default=1000, help="Live fleet of phases 1-2")
    parser.add_argument("--big-equipment", type=int, default=10_000)
    parser.add_argument("--big-minutes", type=float, default=5, help="0 skips the keep-up phase")
    parser.add_argument("--history-equipment", type=int, default=60)
    parser.add_argument("--history-days", type=int, default=60)
    parser.add_argument("--trees", type=int, default=60, help="EMPS_ML_N_ESTIMATORS")
    parser.add_argument("--inject-every", type=float, default=40, help="Seconds between drops")
    parser.add_argument("--skip-scheduled", action="store_true", help="Only the arrival phase")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home")
    parser.add_argument(
        "--home",
        type=Path,
        help="Reuse the platform a kept run bootstrapped (skips the first start); kept after",
    )
    args = parser.parse_args()

    home = args.home or Path(tempfile.mkdtemp(prefix="emps-bench-e2e-"))
    args.keep = args.keep or args.home is not None
    # A --home an earlier run left (its secrets are there) starts without the first start's
    # history, build and training: reported apart from a first start.
    start_key = "later_start_s" if (home / "secrets.json").exists() else "first_start_s"
    ports = {
        name: str(free_port())
        for name in ("PG", "PREFECT", "MLFLOW", "STREAMLIT", "METRICS", "SMTP")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMPS_", "PREFECT_"))}
    env.update({f"EMPS_{name}_PORT": port for name, port in ports.items()})
    env.update(
        {
            "EMPS_HOME": str(home),
            "EMPS_DASHBOARD_BASE_URL": f"http://127.0.0.1:{ports['STREAMLIT']}",
            "EMPS_ADMIN_PASSWORD": "bench-admin-password-1",
            "EMPS_SIM_EQUIPMENT": str(args.history_equipment),
            "EMPS_SIM_HISTORY_DAYS": str(args.history_days),
            "EMPS_ML_N_ESTIMATORS": str(args.trees),
            # Off for the scheduled phase; the arrival phase restarts `emps up` with it on.
            "EMPS_INGEST_WATCH": "true" if args.skip_scheduled else "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    platform = Platform(home=home, env=env, output=home / "emps-up.out")
    sampler = MemorySampler(platform)

    def _terminate(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)  # also when started in the background
    result: dict = {"bench": "e2e"}
    details: dict = {}
    phases: dict = {}  # what finished is reported even when a later phase fails
    try:
        console.print(f"home {home}; log {platform.output}")
        sampler.start()
        details[start_key] = round(
            wait_up(platform, 3600, "first start (history, dbt build, first model)"), 1
        )
        console.print(f"platform up in {details[start_key]} s")

        n_ids = int(2 * args.minutes * 60 / (0.6 * args.inject_every)) + 4
        # New generators each run: a reused --home has the earlier runs' ones, mail and all.
        first = registered_bench_generators(platform) + 1
        ids = [f"{BENCH_PREFIX}{i:04d}" for i in range(first, first + n_ids)]
        fleet = home / "bench-fleet.csv"
        commissioned = (datetime.now(UTC) - timedelta(days=400)).date().isoformat()
        fleet.write_text(
            "equipment_id,equipment_type,site,commissioned_at\n"
            + "".join(f"{i},generator,{SITE},{commissioned}\n" for i in ids)
        )
        platform.cli("equipment", "import", str(fleet))
        mailbox = Mailbox(home / "mailbox")

        platform.start_extra("simulator", "simulate", "live", "--equipment", str(args.equipment))
        if not args.skip_scheduled:
            sampler.label = "1k"
            phases["scheduled"] = latency_phase(
                "scheduled", platform, mailbox, ids, args.minutes, args.inject_every
            )
        if not args.skip_scheduled:
            # The landing watcher runs inside `emps up` (a thread of the supervisor): restart
            # it with the watcher on, while the simulator goes on dropping.
            sampler.label = "restart"
            platform.stop_up()
            platform.env["EMPS_INGEST_WATCH"] = "true"
            details["restart_s"] = round(wait_up(platform, 600, "restart with the watcher on"), 1)
            console.print(f"platform restarted in {details['restart_s']} s")
            wait_for_empty_incoming(platform, 180)
        sampler.label = "1k"
        phases["arrival"] = latency_phase(
            "arrival", platform, mailbox, ids, args.minutes, args.inject_every
        )
        platform.stop_extra("simulator")
        if args.big_minutes > 0:
            sampler.label = "10k"
            phases["keep_up"] = keep_up_phase(platform, args.big_equipment, args.big_minutes)
        sampler.label = "end"

        scheduled = phases.get("scheduled", {})
        arrival = phases["arrival"]
        result.update(
            {
                "scheduled_p95_s": scheduled.get("p95_s"),
                "arrival_p95_s": arrival["p95_s"],
                "peak_rss_mb": round(sampler.peak_rss.get("1k", 0.0)),
                "keeps_up_10k": phases.get("keep_up", {}).get("keeps_up"),
                "scheduled_p50_s": scheduled.get("p50_s"),
                "arrival_p50_s": arrival["p50_s"],
                "scheduled_samples": scheduled.get("samples"),
                "scheduled_missing": scheduled.get("missing"),
                "arrival_samples": arrival["samples"],
                "arrival_missing": arrival["missing"],
                # drop -> readings loaded: the part the arrival trigger changes
                "scheduled_loaded_p95_s": scheduled.get("loaded_p95_s"),
                "arrival_loaded_p95_s": arrival.get("loaded_p95_s"),
                "peak_pss_mb": round(sampler.peak_pss.get("1k", 0.0)),
                "peak_rss_mb_by_service": sampler.peak_parts.get("1k"),
                "peak_rss_mb_10k": round(sampler.peak_rss.get("10k", 0.0)),
                "equipment": args.equipment,
                "big_equipment": args.big_equipment if args.big_minutes > 0 else None,
                "minutes_per_phase": args.minutes,
                "history": f"{args.history_equipment} equipment x {args.history_days} days",
                start_key: details[start_key],
                "restart_s": details.get("restart_s"),
                "load_avg": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
            }
        )
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: stopping the platform[/]")
        result["error"] = "interrupted"
    except Exception as exc:
        console.print(f"[red]bench failed: {exc}[/]")
        result["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        sampler.done.set()
        with console.status("stopping the platform"):
            platform.stop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            console.print(f"kept {home}")
    if sampler.peak_procs.get("1k"):
        print_peak_processes(sampler.peak_procs["1k"])
    if phases:
        console.print_json(json.dumps(phases))
        if "error" in result:
            result["phases"] = phases
    print(json.dumps(result))
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
