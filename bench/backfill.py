"""Backfill throughput next to a raw binary COPY of the same rows, on a fresh temporary database.

    uv run python bench/backfill.py [--equipment 200] [--days 30] [--interval 600] [--seed 42]

"ours" is `emps simulate backfill` end to end (simulate, encode, COPY, events) into an empty
raw.sensor_readings; "copy" is the same rows, generated and encoded beforehand, COPY'd alone into
the emptied table. Last line: {"bench": "backfill", "rows": N, "ours_rows_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from _tempdb import temporary_platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equipment", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--interval", type=int, default=600)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    with temporary_platform("backfill") as platform:
        run(args, platform.settings)


def run(args: argparse.Namespace, settings) -> None:
    from emps.catalog import load_catalog
    from emps.db import Role, connect
    from emps.simulator.backfill import (
        BinaryRows,
        backfill,
        copy_rows,
        copy_statement,
        history_window,
    )
    from emps.simulator.fleet import Fleet

    fleet = Fleet(load_catalog(settings.catalog_path), args.equipment, args.seed)
    # A fixed end keeps runs comparable: the same rows every time for the same arguments.
    start, end = history_window(args.days, args.interval, datetime(2026, 11, 1, tzinfo=UTC))

    ours = backfill(fleet, start, end, args.interval, settings)
    print(
        f"ours: {ours.rows:,} rows in {ours.seconds:.1f} s ({ours.rows_per_s:,.0f} rows/s); "
        f"{ours.events.failure_events} failure events, {ours.events.repairs} repairs, "
        f"{ours.events.preventive} preventive services"
    )

    began = time.perf_counter()
    encoder = BinaryRows(fleet)
    payloads = [encoder.encode(chunk) for chunk in fleet.chunks(start, end, args.interval)]
    generate_s = time.perf_counter() - began
    rows = ours.rows
    with connect(Role.INGEST, settings) as conn:
        conn.execute("set synchronous_commit = off")
        with connect(Role.OWNER, settings, autocommit=True) as owner:
            owner.execute("truncate raw.sensor_readings")
        conn.commit()
        began = time.perf_counter()
        copy_rows(conn, copy_statement("raw.sensor_readings", fleet.sensors), iter(payloads))
        conn.commit()
        copy_s = time.perf_counter() - began
        copied = conn.execute("select count(*) from raw.sensor_readings").fetchone()[0]
    assert copied == rows, f"raw COPY wrote {copied} rows, backfill {rows}"
    copy_rate = rows / copy_s
    print(
        f"raw COPY: {rows:,} rows in {copy_s:.1f} s ({copy_rate:,.0f} rows/s); "
        f"generating + encoding them alone took {generate_s:.1f} s"
    )
    print(
        json.dumps(
            {
                "bench": "backfill",
                "rows": rows,
                "equipment": args.equipment,
                "days": args.days,
                "interval_s": args.interval,
                "ours_s": round(ours.seconds, 2),
                "ours_rows_s": round(ours.rows_per_s),
                "copy_rows_s": round(copy_rate),
                "ratio": round(ours.rows_per_s / copy_rate, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
