"""Incremental feature build (dbt) after one minute of new readings, for 1,000 and 10,000
equipment with 7 days of 10-minute history, next to a full rebuild.

    uv run python bench/features.py [--history-days 7] [--full-rebuild-hours 6]

Runs on a fresh temporary embedded PostgreSQL. History is written with ingested_at = ts, as if it
had arrived live. The feature table is seeded with the last hour of history (so the incremental
run has its usual starting point), one reading per equipment is added one minute later, and the
time of `dbt build --selector after_ingest` (what the build-features flow runs: the incremental
models and their data tests, dbt start-up included) is measured, the second of two runs (the first
parses the project). The full rebuild recomputes every feature row of the last
--full-rebuild-hours at 10,000 equipment; every row costs the same (its 24 h lookback), so the
whole history's figure is scaled from it and marked as extrapolated unless the hours cover it.
Last line: {"bench": "features", "incremental_1k_s": ..., "incremental_10k_s": ...,
"full_rebuild_10k_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HISTORY_SQL = """
insert into raw.sensor_readings
    (equipment_id, ts, ingested_at, temperature, vibration, pressure, humidity, voltage)
select e.equipment_id, g.ts, g.ts,
       80 + 2 * random(), 3 + random(), 350 + 20 * random(), 40 + 5 * random(), 410 + 5 * random()
from raw.equipment e
cross join generate_series(%(start)s::timestamptz, %(end)s::timestamptz, interval '10 minutes') g(ts)
where e.equipment_id >= %(first)s and e.equipment_id <= %(last)s
"""

MINUTE_SQL = """
insert into raw.sensor_readings
    (equipment_id, ts, temperature, vibration, pressure, humidity, voltage)
select e.equipment_id, %(ts)s::timestamptz,
       80 + 2 * random(), 3 + random(), 350 + 20 * random(), 40 + 5 * random(), 410 + 5 * random()
from raw.equipment e
where e.equipment_id <= %(last)s
"""


def equipment_id(i: int) -> str:
    return f"GEN-{i:05d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history-days", type=int, default=7)
    parser.add_argument(
        "--full-rebuild-hours",
        type=int,
        default=6,
        help="Hours of history the timed full rebuild covers (the rest is extrapolated)",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="emps-bench-features-"))
    for key in [k for k in os.environ if k.startswith("EMPS_")]:
        del os.environ[key]
    os.environ["EMPS_HOME"] = str(home)
    os.environ["EMPS_PG_PORT"] = str(free_port())

    from datetime import UTC, datetime, timedelta

    from rich.console import Console

    from emps import transform
    from emps.db import Role, connect, embedded_server
    from emps.migrate import migrate
    from emps.settings import get_settings

    console = Console(stderr=True)
    settings = get_settings()
    server = embedded_server(settings)
    server.start()
    results: dict[str, float | None] = {}
    try:
        # History ends on the hour before "now"; partitions must cover the whole week.
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        history_start = now - timedelta(days=args.history_days)
        migrate(settings)
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            conn.execute(
                "select ops.ensure_month_partitions('raw.sensor_readings'::regclass, %s, %s)",
                (history_start, now + timedelta(days=1)),
            )
            conn.execute(
                "insert into raw.equipment (equipment_id, equipment_type, site) "
                "select 'GEN-' || lpad(i::text, 5, '0'), 'generator', 'site-' || (i % 20) "
                "from generate_series(1, 10000) i"
            )

        def load_history(first: int, last: int) -> None:
            started = time.perf_counter()
            with connect(Role.OWNER, settings, autocommit=True) as conn:
                conn.execute(
                    HISTORY_SQL,
                    {
                        "start": history_start,
                        "end": now - timedelta(minutes=10),
                        "first": equipment_id(first),
                        "last": equipment_id(last),
                    },
                )
                conn.execute("analyze raw.sensor_readings")
            console.print(
                f"history for equipment {first}-{last}: {time.perf_counter() - started:.0f} s"
            )

        def build(**kwargs) -> transform.DbtRunSummary:
            summary = transform.build(settings=settings, **kwargs)
            fct = next((n for n in summary.nodes if n.name == "fct_equipment_features"), None)
            console.print(
                f"  dbt build {kwargs}: {summary.seconds:.1f} s"
                + (f" (feature model SQL {fct.seconds:.1f} s)" if fct else "")
            )
            return summary

        def seed_features() -> None:
            # Feature rows for the last hour of history only: the incremental run's usual state.
            # Unit tests use fixed 2026 dates that features_since would filter out.
            build(
                full_refresh=True,
                extra_args=["--exclude-resource-type", "unit_test"],
                extra_vars={"features_since": (now - timedelta(hours=1)).isoformat()},
            )

        def one_minute_later(last: int, minute: int) -> float:
            with connect(Role.OWNER, settings, autocommit=True) as conn:
                conn.execute(
                    MINUTE_SQL,
                    {"ts": now + timedelta(minutes=minute), "last": equipment_id(last)},
                )
            started = time.perf_counter()
            transform.build_after_ingest(settings)
            seconds = time.perf_counter() - started
            console.print(f"  incremental build after minute {minute}: {seconds:.1f} s")
            return seconds

        # 1,000 equipment.
        load_history(1, 1000)
        seed_features()
        one_minute_later(1000, 0)  # first incremental run also parses the project cold
        results["incremental_1k_s"] = round(one_minute_later(1000, 1), 2)

        # 10,000 equipment.
        load_history(1001, 10000)
        seed_features()
        one_minute_later(10000, 2)
        results["incremental_10k_s"] = round(one_minute_later(10000, 3), 2)

        # Full rebuild: every feature row of the last --full-rebuild-hours at 10,000 equipment.
        # Each row costs the same (its 24 h lookback), so the whole history scales linearly.
        since = now - timedelta(hours=args.full_rebuild_hours)
        started = time.perf_counter()
        build(
            select=["fct_equipment_features"],
            full_refresh=True,
            extra_vars={"features_since": since.isoformat()},
            extra_args=["--exclude-resource-type", "unit_test"],
        )
        partial = time.perf_counter() - started
        history_hours = args.history_days * 24
        results[f"full_rebuild_10k_last_{args.full_rebuild_hours}h_s"] = round(partial, 2)
        if args.full_rebuild_hours >= history_hours:
            results["full_rebuild_10k_s"] = round(partial, 2)
        else:
            results["full_rebuild_10k_s"] = round(
                partial * history_hours / args.full_rebuild_hours, 2
            )
            results["full_rebuild_10k_is_extrapolated"] = True
    finally:
        server.stop(mode="immediate")
    print(json.dumps({"bench": "features", **results}))


if __name__ == "__main__":
    main()
