"""The HTTP API under load: ingest, predict and the overview, next to a bare endpoint on the same
server, in one run on a fresh temporary platform.

    uv run python bench/api.py [--duration 20] [--concurrency 20] [--equipment 200] [--days 60]
                               [--trees N] [--keep] [--profile]

The platform: `--equipment` simulated equipment of the catalog's types with `--days` of history
(the simulator backfill `emps up` runs, emps.bootstrap.backfill_history), the full dbt build
(emps.bootstrap.build_features), a champion trained and promoted as `emps model train` does
(emps.ml.train.retrain: EMPS_ML_N_ESTIMATORS trees unless --trees), one scoring round and the
dashboard marts refreshed after it, one device key bound to every equipment
(emps.api.devices.add_device, as `emps devices add`) and one Viewer's API token
(emps.users.mint_token, as `emps user token`).

The server is the real API as `emps api` runs it (uvicorn, one process, 127.0.0.1, a free port),
through bench/_api_server.py, which adds `GET /bench/constant` (a bare FastAPI endpoint returning
a constant) to the same application: the floor of this server, measured in the same run. The
per-key rate limit is lifted (EMPS_API_RATE_PER_KEY): one key here stands for a whole fleet of
devices, and the bench measures the server, not the limiter (`rate_limited` counts any 429).

The load client is one process of this script: `--concurrency` connections (default 20), each a
task of one aiohttp.ClientSession sending its next request as soon as the last one is answered
(closed loop). aiohttp, not httpx: on this machine an httpx client spent ~1.6 ms of CPU per
request against ~0.13 ms for aiohttp, so with httpx the client, not the server, would set the
pace on 2 cores. The client shares the machine's 2 cores with the server and PostgreSQL; the CPU
each of the three used per request is printed per phase, so the reader can see who was busy.
Phases, each `--duration` seconds after a short warm-up that is not counted:

    bare            GET  /bench/constant
    ingest          POST /api/v1/sensors/ingest, 1 reading per request (a JSON object)
    ingest_batch    POST /api/v1/sensors/ingest, 100 readings per request (a JSON array)
    predict         POST /api/v1/predictions/predict, one equipment id per request
    predict_batch   POST /api/v1/predictions/predict, `--predict-batch` ids per request
    overview        GET  /api/v1/dashboard/overview

Readings are built from the catalog (each equipment's type's channels, mid-range values) and
never collide: reading k is equipment k mod N at the k div N-th second after a start half a
second off the history's grid. After the ingest phases the server is stopped (its drop files are
closed and handed on as on any stop) and every drop file line under incoming/ is read back:
`ingest_lost` counts readings answered 202 that no drop file holds (must be 0).

Targets (the product's, on a 2-core machine; reported, never tuned for): ingest >= 1,000
requests/s with p95 < 100 ms; predict p95 < 50 ms and >= 500/s; overview p95 < 500 ms at 20
concurrent clients. Last line: {"bench": "api", "ingest_rps": ..., "ingest_p95_ms": ...,
"ingest_batch_readings_s": ..., "ingest_batch_p95_ms": ..., "predict_p95_ms": ...,
"predict_rps": ..., "predict_batch_per_s": ..., "overview_p95_ms": ..., "overview_rps": ...,
"bare_rps": ..., "bare_p95_ms": ..., "concurrency": 20, "duration_s_per_phase": ...,
"ingest_vs_bare": ..., "ingest_lost": 0, "errors": {...}, "targets": {...}, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _tempdb import ROOT, temporary_platform
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from emps import processes

console = Console()
INGEST = "/api/v1/sensors/ingest"
PREDICT = "/api/v1/predictions/predict"
OVERVIEW = "/api/v1/dashboard/overview"
BATCH_READINGS = 100


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    duration: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # transport errors by type
    server_cpu_s: float = 0.0
    postgres_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    first_ms: float = 0.0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if not 200 <= s < 300) + sum(
            self.failures.values()
        )

    @property
    def rps(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    def percentile(self, q: float) -> float | None:
        import numpy as np

        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else None


@dataclass
class Request:
    method: str
    path: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    on_accepted: Callable[[], None] | None = None


# -- the platform -----------------------------------------------------------------------------


def prepare(settings, console: Console) -> dict:
    """History, features, a champion, a scoring round, the dashboard marts; a device key bound
    to every equipment and a Viewer's token. Returns what the load needs."""
    from emps import transform
    from emps.api.devices import add_device
    from emps.bootstrap import backfill_history, build_features, step_progress
    from emps.db import Role, connect
    from emps.ml import predict
    from emps.ml.train import retrain, training_steps
    from emps.users import add_user, mint_token

    timings = {}
    began = time.perf_counter()
    backfill_history(settings)
    timings["backfill_s"] = time.perf_counter() - began
    began = time.perf_counter()
    build_features(settings)
    timings["build_s"] = time.perf_counter() - began
    began = time.perf_counter()
    with step_progress("champion", training_steps(settings) + 2, on=console) as on_step:
        result, decision = retrain("bench-api", settings, on_step)
    if decision is None or not decision.promoted:
        raise SystemExit(f"the bench's model was not made champion: {decision}")
    timings["train_s"] = time.perf_counter() - began
    began = time.perf_counter()
    with console.status("  one scoring round and the dashboard marts"):
        scored = predict.score_equipment(settings, emit_events=False)
        refresh = transform.build(selector=transform.DASHBOARD_STATE_SELECTOR, settings=settings)
    if not refresh.success:
        raise SystemExit(f"dbt build of the dashboard marts failed:\n{refresh.describe_failures()}")
    timings["score_refresh_s"] = time.perf_counter() - began
    console.print(
        f"  champion v{result.version}; {scored.scored} equipment scored; dashboard marts "
        f"refreshed in {refresh.seconds:.1f} s"
    )

    with connect(Role.OWNER, settings, autocommit=True) as conn:
        equipment = [
            (e, t)
            for e, t in conn.execute(
                "select equipment_id, equipment_type from raw.equipment order by equipment_id"
            ).fetchall()
        ]
        key = add_device(conn, "bench-device", [e for e, _ in equipment], actor="bench").key
        viewer = add_user(conn, "bench-viewer", "Viewer", "a long bench password", rounds=4)
        token = mint_token(conn, viewer.username, "bench", 1, actor="bench")[0]
    return {
        "equipment": equipment,
        "device_key": key,
        "device_id": "bench-device",
        "token": token,
        "model_version": result.version,
        **timings,
    }


def start_server(port: int, log: Path, profile: Path | None) -> subprocess.Popen[bytes]:
    """bench/_api_server.py on `port`, once /health answers; the caller stops it."""
    argv = [sys.executable, str(ROOT / "bench" / "_api_server.py"), str(port)]
    env = {**os.environ, "EMPS_API_PORT": str(port)}
    process = processes.start([*argv, *([str(profile)] if profile else [])], log, env, cwd=ROOT)
    health = f"http://127.0.0.1:{port}/health"
    try:
        processes.wait_until_answers("the API", process, health, log, timeout_s=120)
    except processes.ServerDidNotStart:
        processes.stop(process)
        raise
    return process


def postgres_cpu(settings) -> Callable[[], float]:
    """CPU seconds the temporary platform's PostgreSQL has used: its postmaster, the backends
    alive now, and (through the postmaster's reaped-children times) every backend that ended."""
    import psutil

    pid = int((settings.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)

    def used() -> float:
        times = postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        return total + cpu_seconds(postmaster.children())

    return used


def cpu_seconds(processes) -> float:
    import psutil

    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


# -- readings ---------------------------------------------------------------------------------


class Readings:
    """Valid readings from the catalog, each (equipment, timestamp) used once."""

    def __init__(self, catalog, equipment: list[tuple[str, str]], start: datetime):
        self.equipment = equipment
        self.values = {
            etype: {
                channel: round(sum(catalog.channels[channel].valid_range) / 2, 3)
                for channel in catalog.equipment_types[etype].channels
            }
            for etype in {t for _, t in equipment}
        }
        self.start = start
        self.next = 0
        self.accepted: list[tuple[str, str]] = []

    def take(self, count: int) -> list[dict]:
        first, self.next = self.next, self.next + count
        readings = []
        for k in range(first, first + count):
            equipment_id, etype = self.equipment[k % len(self.equipment)]
            ts = self.start + timedelta(seconds=k // len(self.equipment))
            readings.append(
                {"equipment_id": equipment_id, "timestamp": ts.isoformat(), **self.values[etype]}
            )
        return readings

    def request(self, count: int, key: str) -> Request:
        readings = self.take(count)
        body = readings[0] if count == 1 else readings
        keys = [(r["equipment_id"], r["timestamp"]) for r in readings]
        return Request(
            "POST",
            INGEST,
            json.dumps(body).encode(),
            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            lambda: self.accepted.extend(keys),
        )


def lines_written(landing_dir: Path, device_id: str) -> tuple[set[tuple[str, str]], int]:
    """Every (equipment, timestamp) in the device's drop files, open or handed on; and the
    number of lines."""
    found: set[tuple[str, str]] = set()
    lines = 0
    for path in (landing_dir / "incoming" / device_id).glob("*api-*.ndjson*"):
        with path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    record = json.loads(line)
                    found.add((record["equipment_id"], record["timestamp"]))
                    lines += 1
    return found, lines


# -- the load ---------------------------------------------------------------------------------


async def send(session, request: Request) -> int:
    """Send one request, read the whole answer; its status. Accepted readings are noted."""
    async with session.request(
        request.method, request.path, data=request.body, headers=request.headers
    ) as response:
        await response.read()
    if response.status in (200, 202) and request.on_accepted is not None:
        request.on_accepted()  # warm-up too: every accepted reading is checked afterwards
    return response.status


async def run_phase(
    name: str,
    url: str,
    make: Callable[[], Request],
    duration: float,
    concurrency: int,
    warmup: float,
    watched: Callable[[], tuple[float, float]],
    progress: Progress,
) -> Phase:
    """One request alone (what a cold route costs, e.g. loading the champion), then
    `concurrency` connections sending `make()` requests back to back for warm-up + duration."""
    import aiohttp

    phase = Phase(name)
    task = progress.add_task(name, total=warmup + duration)
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:
        sent = time.perf_counter()
        status = await send(session, make())
        phase.first_ms = (time.perf_counter() - sent) * 1000
        if not 200 <= status < 300:
            raise SystemExit(f"{name}: the first request was answered {status}; see the API log")
        began = time.perf_counter()
        measured_from = began + warmup
        stop = measured_from + duration
        snapshot: dict[str, float] = {}

        async def worker() -> None:
            while True:
                request = make()
                sent = time.perf_counter()
                if sent >= stop:
                    return
                try:
                    status = await send(session, request)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if sent >= measured_from:
                        kind = type(exc).__name__
                        phase.failures[kind] = phase.failures.get(kind, 0) + 1
                    continue
                if sent >= measured_from:
                    phase.latencies_ms.append((time.perf_counter() - sent) * 1000)
                    phase.statuses[status] = phase.statuses.get(status, 0) + 1

        async def ticker() -> None:
            while (now := time.perf_counter()) < stop:
                if now >= measured_from and not snapshot:
                    server, postgres = watched()
                    snapshot.update(
                        server=server, postgres=postgres, client=time.process_time(), at=now
                    )
                progress.update(task, completed=min(now - began, warmup + duration))
                await asyncio.sleep(0.1)

        await asyncio.gather(ticker(), *(worker() for _ in range(concurrency)))
        ended = time.perf_counter()
        server, postgres = watched()
    phase.duration = ended - snapshot["at"]
    phase.server_cpu_s = server - snapshot["server"]
    phase.postgres_cpu_s = postgres - snapshot["postgres"]
    phase.client_cpu_s = time.process_time() - snapshot["client"]
    progress.update(task, completed=warmup + duration, description=f"{name} ({phase.rps:,.0f}/s)")
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="Uncounted seconds per phase")
    parser.add_argument("--concurrency", type=int, default=20, help="Client connections")
    parser.add_argument("--equipment", type=int, default=200, help="Simulated equipment")
    parser.add_argument("--days", type=int, default=60, help="Days of simulated history")
    parser.add_argument("--trees", type=int, default=None, help="Default: the shipped count")
    parser.add_argument(
        "--predict-batch", type=int, default=20, help="Equipment ids per batch predict request"
    )
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Run the server under cProfile and print where its time went (slows it down)",
    )
    args = parser.parse_args()
    env = {
        "EMPS_SIM_EQUIPMENT": str(args.equipment),
        "EMPS_SIM_HISTORY_DAYS": str(args.days),
        # One key stands for a whole fleet here: measure the server, not the per-key limiter.
        "EMPS_API_RATE_PER_KEY": "1000000000",
        "EMPS_API_RATE_BURST": "1000000000",
        **({"EMPS_ML_N_ESTIMATORS": str(args.trees)} if args.trees else {}),
    }
    os.environ.setdefault("DO_NOT_TRACK", "1")
    with temporary_platform("api", env, keep=args.keep) as platform:
        if args.keep:
            console.print(f"keeping the temporary home {platform.home}")
        result = run(args, platform.settings, platform.home)
    print(json.dumps(result))


def run(args: argparse.Namespace, settings, home: Path) -> dict:
    import psutil

    from emps.catalog import load_catalog

    began = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    ready = prepare(settings, console)
    equipment = ready["equipment"]
    catalog = load_catalog(settings.catalog_path)
    start = datetime.now(UTC).replace(microsecond=500_000) - timedelta(days=args.days)
    readings = Readings(catalog, equipment, start)

    port = processes.free_port()
    profile = home / "api-server.prof" if args.profile else None
    server = start_server(port, home / "api-bench.log", profile)
    url = f"http://127.0.0.1:{port}"
    server_process = psutil.Process(server.pid)
    postgres = postgres_cpu(settings)

    def watched() -> tuple[float, float]:
        return cpu_seconds([server_process]), postgres()

    user = {"Authorization": f"Bearer {ready['token']}"}
    json_user = {**user, "Content-Type": "application/json"}
    ids = [e for e, _ in equipment]
    counter = iter(range(10**12))
    batch = min(args.predict_batch, len(ids))

    def one_id() -> Request:
        body = {"equipment_ids": [ids[next(counter) % len(ids)]]}
        return Request("POST", PREDICT, json.dumps(body).encode(), json_user)

    def many_ids() -> Request:
        first = next(counter)
        chosen = [ids[(first + i) % len(ids)] for i in range(batch)]
        return Request("POST", PREDICT, json.dumps({"equipment_ids": chosen}).encode(), json_user)

    key = ready["device_key"]
    plan: list[tuple[str, Callable[[], Request]]] = [
        ("bare", lambda: Request("GET", "/bench/constant")),
        ("ingest", lambda: readings.request(1, key)),
        ("ingest_batch", lambda: readings.request(BATCH_READINGS, key)),
        ("predict", one_id),
        ("predict_batch", many_ids),
        ("overview", lambda: Request("GET", OVERVIEW, headers=user)),
    ]
    phases: dict[str, Phase] = {}
    try:
        with Progress(
            TextColumn("  {task.description:<28}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=4,
        ) as progress:
            for name, make in plan:
                phases[name] = asyncio.run(
                    run_phase(
                        name,
                        url,
                        make,
                        args.duration,
                        args.concurrency,
                        args.warmup,
                        watched,
                        progress,
                    )
                )
        if profile is not None:
            import httpx

            httpx.post(f"{url}/bench/profile", timeout=120).raise_for_status()
    finally:
        processes.stop(server, grace_s=60)

    if profile is not None and profile.exists():
        import pstats

        stats = pstats.Stats(str(profile))
        console.print("where the server's time went, every thread (cProfile; own time, top 40):")
        stats.sort_stats("tottime").print_stats(40)
        console.print("and by cumulative time, top 40:")
        stats.sort_stats("cumulative").print_stats(40)

    # Every reading answered 202 must be in a drop file (the server is stopped: files closed).
    written, lines = lines_written(settings.landing_dir, ready["device_id"])
    accepted = set(readings.accepted)
    lost = len(accepted - written)
    if len(accepted) != len(readings.accepted):
        raise SystemExit("the bench sent a reading twice: its timestamps collide")

    table = Table(
        "phase", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "CPU ms/req: API", "PG",
        "client", title=f"{args.concurrency} connections, {args.duration:g} s per phase",
    )  # fmt: skip
    for phase in phases.values():
        per = max(phase.ok + phase.errors, 1)
        table.add_row(
            phase.name,
            f"{phase.rps:,.0f}",
            *(f"{phase.percentile(q):.1f}" if phase.latencies_ms else "–" for q in (50, 95, 99)),
            str(phase.errors),
            f"{phase.server_cpu_s / per * 1000:.2f}",
            f"{phase.postgres_cpu_s / per * 1000:.2f}",
            f"{phase.client_cpu_s / per * 1000:.2f}",
        )
    console.print(table)
    console.print(
        f"  {len(accepted):,} readings answered 202, {lines:,} drop file lines, "
        f"{lost} accepted reading(s) missing from the drop files"
    )

    def rounded(value: float | None, digits: int = 1) -> float | None:
        return None if value is None else round(value, digits)

    p = phases
    ingest_rps, bare_rps = p["ingest"].rps, p["bare"].rps
    figures = {
        "bench": "api",
        "ingest_rps": rounded(ingest_rps),
        "ingest_p95_ms": rounded(p["ingest"].percentile(95)),
        "ingest_batch_readings_s": rounded(p["ingest_batch"].rps * BATCH_READINGS),
        "ingest_batch_rps": rounded(p["ingest_batch"].rps),
        "ingest_batch_p95_ms": rounded(p["ingest_batch"].percentile(95)),
        "predict_p95_ms": rounded(p["predict"].percentile(95)),
        "predict_first_ms": rounded(p["predict"].first_ms),
        "predict_rps": rounded(p["predict"].rps),
        "predict_batch_per_s": rounded(p["predict_batch"].rps * batch),
        "predict_batch_p95_ms": rounded(p["predict_batch"].percentile(95)),
        "predict_batch_size": batch,
        "overview_p95_ms": rounded(p["overview"].percentile(95)),
        "overview_rps": rounded(p["overview"].rps),
        "bare_rps": rounded(bare_rps),
        "bare_p95_ms": rounded(p["bare"].percentile(95)),
        "concurrency": args.concurrency,
        "duration_s_per_phase": args.duration,
        "ingest_vs_bare": round(ingest_rps / bare_rps, 3) if bare_rps else None,
        "ingest_accepted_readings": len(accepted),
        "ingest_lost": lost,
        "ingest_unaccepted_lines": lines - len(accepted & written),
        "errors": {n: ph.errors for n, ph in p.items()},
        "rate_limited": sum(ph.statuses.get(429, 0) for ph in p.values()),
        "cpu_ms_per_request": {
            n: {
                "server": round(ph.server_cpu_s / max(ph.ok + ph.errors, 1) * 1000, 3),
                "postgres": round(ph.postgres_cpu_s / max(ph.ok + ph.errors, 1) * 1000, 3),
                "client": round(ph.client_cpu_s / max(ph.ok + ph.errors, 1) * 1000, 3),
            }
            for n, ph in p.items()
        },
        "equipment": len(equipment),
        "days": args.days,
        "trees": settings.ml.n_estimators,
        "cores": os.cpu_count(),
        "load_avg_1m_at_start": round(load_at_start, 2),
        "profiled": bool(args.profile),
        "setup_s": round(sum(v for k, v in ready.items() if k.endswith("_s")), 1),
        "total_s": round(time.perf_counter() - began, 1),
    }
    ingest_p95 = figures["ingest_p95_ms"]
    predict_p95 = figures["predict_p95_ms"]
    overview_p95 = figures["overview_p95_ms"]
    figures["targets"] = {
        "ingest_rps_ge_1000": ingest_rps >= 1000,
        "ingest_p95_lt_100ms": ingest_p95 is not None and ingest_p95 < 100,
        "predict_p95_lt_50ms": predict_p95 is not None and predict_p95 < 50,
        "predict_rps_ge_500": p["predict"].rps >= 500,
        "overview_p95_lt_500ms": overview_p95 is not None and overview_p95 < 500,
        "ingest_lost_0": lost == 0,
    }
    return figures


if __name__ == "__main__":
    main()
