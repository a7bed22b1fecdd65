"""Ingest throughput next to a raw COPY of the same rows, on a fresh temporary database.

    uv run python bench/ingest.py [--rows 100000] [--small-files 1000] [--repeat 3]

"ours" is the end-to-end ingest of one CSV drop file of --rows readings (claim, hash, parse,
validate with the Great Expectations suite, COPY, conflict check, ledger, archive), after one
warm-up file so Great Expectations' one-time import and context build (reported as gx_setup_s)
are not counted. "copy" is a plain `COPY ... FROM STDIN (FORMAT csv)` of the same file's bytes into
the emptied raw.sensor_readings. Both are measured --repeat times on fresh readings (a shared
2-core machine makes single runs noisy); the figures reported are the medians, the ratios of
every repetition listed. Then --small-files one-row files (one per device) go through one
flow-less batch call. Dropped files are dated a few seconds back, as finished drops are, so the
scan claims them without waiting for them to settle. Last line:
{"bench": "ingest", "rows": N, "ours_rows_s": ..., "copy_rows_s": ..., "ratio": ...,
 "ratios": [...], "parse_s": ..., "validate_s": ..., "load_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _tempdb import temporary_platform


def drop_csv(equipment: list[str], minutes: int, start: datetime, sensors: list[str]) -> bytes:
    """A device-style CSV: one row per equipment per minute, realistic decimal readings."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    n = len(equipment) * minutes
    frame = pd.DataFrame(
        {
            "equipment_id": np.tile(equipment, minutes),
            "timestamp": np.repeat(
                [(start + timedelta(minutes=m)).isoformat() for m in range(minutes)],
                len(equipment),
            ),
        }
    )
    for sensor in sensors:
        frame[sensor] = rng.uniform(10, 90, n).round(3)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def drop(path: Path, data: bytes) -> None:
    """Write a drop file as a finished one: its modification time a few seconds back."""
    path.write_bytes(data)
    finished = time.time() - 10
    os.utime(path, (finished, finished))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with temporary_platform("ingest") as platform:
        run(args, platform.settings)


def run(args: argparse.Namespace, settings) -> None:
    from psycopg import sql

    from emps.catalog import load_catalog
    from emps.db import Role, connect
    from emps.ingest.landing import Landing
    from emps.ingest.pipeline import Ingestor

    catalog = load_catalog(settings.catalog_path)
    sensors = [s.name for s in catalog.sensors.values()]
    n_equipment = max(args.small_files, 1000)
    equipment = [f"unit-{i:05d}" for i in range(n_equipment)]
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select id, %s, 'bench' from unnest(%s::text[]) as id",
            (catalog.type_names[0], equipment),
        )
    landing = Landing(settings.landing_dir).ensure()
    minutes = args.rows // 1000
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=2)
    rows = 1000 * minutes

    began = time.perf_counter()
    ingestor = Ingestor(settings)
    drop(
        landing.incoming / "warmup.csv",
        drop_csv(equipment[:1], 1, start - timedelta(days=1), sensors),
    )
    ingestor.run()
    gx_setup_s = time.perf_counter() - began

    columns = sql.SQL(", ").join(map(sql.Identifier, ["equipment_id", "ts", *sensors]))
    copy_sql = sql.SQL("copy raw.sensor_readings ({}) from stdin (format csv, header true)").format(
        columns
    )
    ours, copies, reports = [], [], []
    for repetition in range(args.repeat):
        data = drop_csv(equipment[:1000], minutes, start + timedelta(hours=2 * repetition), sensors)
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            conn.execute("truncate raw.sensor_readings")
            conn.execute("checkpoint")
        drop(landing.incoming / f"big-{repetition}.csv", data)
        began = time.perf_counter()
        report = ingestor.run()
        ours.append(time.perf_counter() - began)
        assert report.total("rows_loaded") == rows, report.summary()
        reports.append(report)
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            conn.execute("truncate raw.sensor_readings")
            conn.execute("checkpoint")
            began = time.perf_counter()
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.write(data)
            copies.append(time.perf_counter() - began)
            assert conn.execute("select count(*) from raw.sensor_readings").fetchone()[0] == rows
            conn.execute("truncate raw.sensor_readings")
        print(
            f"repetition {repetition + 1}: ours {ours[-1]:.2f} s ({rows / ours[-1]:,.0f} rows/s; "
            f"parse {report.timings['parse_s']:.2f} s, validate {report.timings['validate_s']:.2f} s, "
            f"load {report.timings['load_s']:.2f} s), copy {copies[-1]:.2f} s "
            f"({rows / copies[-1]:,.0f} rows/s): ratio {copies[-1] / ours[-1]:.3f}",
            flush=True,
        )
    ours_s, copy_s = statistics.median(ours), statistics.median(copies)
    ratios = [round(c / o, 3) for c, o in zip(copies, ours, strict=True)]
    report = reports[ours.index(sorted(ours)[len(ours) // 2])]
    print(f"GX one-time setup {gx_setup_s:.1f} s")

    for i, equipment_id in enumerate(equipment[: args.small_files]):
        drop(
            landing.incoming / f"{equipment_id}-{i}.csv",
            drop_csv([equipment_id], 1, start + timedelta(days=1), sensors),
        )
    began = time.perf_counter()
    small = ingestor.run()
    small_s = time.perf_counter() - began
    assert small.total("rows_loaded") == args.small_files, small.summary()
    print(f"small files: {args.small_files} one-row files in {small_s:.2f} s ({small.summary()})")

    ratio = statistics.median(ratios)
    print(
        json.dumps(
            {
                "bench": "ingest",
                "rows": rows,
                "ours_rows_s": round(rows / ours_s),
                "copy_rows_s": round(rows / copy_s),
                "ratio": round(ratio, 3),
                "ratios": ratios,
                "parse_s": round(report.timings["parse_s"], 3),
                "validate_s": round(report.timings["validate_s"], 3),
                "load_s": round(report.timings["load_s"], 3),
                "gx_setup_s": round(gx_setup_s, 2),
                "small_files": args.small_files,
                "small_files_s": round(small_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
