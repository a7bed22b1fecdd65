"""Incremental feature build (dbt) after one minute of new readings, for 1,000 and 10,000
equipment with 7 days of 10-minute history, next to a full rebuild.

    uv run python bench/features.py [--equipment 1000 10000] [--history-days 7]
                                    [--full-rebuild-hours 6]

Runs on a fresh temporary platform (bench/_tempdb.py). History is written with ingested_at = ts,
as if it had arrived live. The feature table is seeded with the last hour of history (so the
incremental run has its usual starting point), one reading per equipment is added one minute
later, and the time of `dbt build --selector after_ingest` (what the build-features flow runs,
dbt start-up included) is measured, the second of two runs (the first parses the project).
The slowest dbt nodes of each build go to stderr. The full rebuild is `dbt build --full-refresh`
of the feature table and everything it reads at the larger size, feature rows of the last
--full-rebuild-hours (default 6; 0 for the whole history, measured): feature rows cost the same
whatever their time, so the whole history's figure scales the feature model's time (the other
models always cover the whole history) and is marked as extrapolated.
Then the smaller fleet's last day is stamped again as one bulk load of now (a gateway back after
a day offline, an import), its features built, and the incremental run after it is timed as built (each model reads back to the bound
its last run recorded) and with the bounds deleted (the fixed ten-minute look-back margin, which
reads the whole load again): the same run's baseline.
Last line: {"bench": "features", "incremental_1k_s": ..., "incremental_10k_s": ...,
"incremental_1k_after_bulk_s": ..., "incremental_1k_after_bulk_margin_s": ...,
"after_bulk_bound_vs_margin": ..., "full_rebuild_10k_s": ...}.
"""

from __future__ import annotations

import argparse
import json
import time

from _tempdb import temporary_platform


def readings_sql(catalog, equipment_type: str, history: bool) -> str:
    """An INSERT of one reading per equipment (per 10 minutes of history, or at %(ts)s), each
    of the type's sensors uniform over the middle of its healthy band (or valid range)."""
    from psycopg import sql

    sensors = catalog.type_sensors(equipment_type)
    values = []
    for sensor in sensors:
        low, high = catalog.envelope(equipment_type, sensor) or catalog.channels[sensor].valid_range
        middle, half = (low + high) / 2, (high - low) / 4
        values.append(sql.SQL("{} + {} * (random() - 0.5)").format(middle, 2 * half))
    columns = sql.SQL(", ").join(map(sql.Identifier, sensors))
    if history:
        statement = sql.SQL(
            "insert into raw.sensor_readings (equipment_id, ts, ingested_at, {columns}) "
            "select e.equipment_id, g.ts, g.ts, {values} from raw.equipment e "
            "cross join generate_series(%(start)s::timestamptz, %(end)s::timestamptz, "
            "interval '10 minutes') g(ts) "
            "where e.equipment_id >= %(first)s and e.equipment_id <= %(last)s"
        )
    else:
        statement = sql.SQL(
            "insert into raw.sensor_readings (equipment_id, ts, {columns}) "
            "select e.equipment_id, %(ts)s::timestamptz, {values} from raw.equipment e "
            "where e.equipment_id <= %(last)s"
        )
    return statement.format(columns=columns, values=sql.SQL(", ").join(values))


def equipment_id(i: int) -> str:
    return f"M-{i:05d}"


def size(n: int) -> str:
    """1000 -> "1k" for the result keys."""
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--equipment", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--history-days", type=int, default=7)
    parser.add_argument(
        "--full-rebuild-hours",
        type=int,
        default=6,
        help="Hours of history the timed full rebuild covers, the rest extrapolated (0: all)",
    )
    args = parser.parse_args()

    with temporary_platform("features") as platform:
        results = run(args, platform.settings)
    print(json.dumps({"bench": "features", **results}))


def run(args: argparse.Namespace, settings) -> dict[str, float | bool]:
    from datetime import UTC, datetime, timedelta

    from rich.console import Console

    from emps import transform
    from emps.catalog import load_catalog
    from emps.db import Role, connect

    console = Console(stderr=True)
    results: dict[str, float | bool] = {}
    # History ends on the hour before "now"; partitions must cover the whole week.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    history_start = now - timedelta(days=args.history_days)
    small, large = args.equipment
    catalog = load_catalog(settings.catalog_path)
    equipment_type = catalog.type_names[0]
    history_sql = readings_sql(catalog, equipment_type, history=True)
    minute_sql = readings_sql(catalog, equipment_type, history=False)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "select ops.ensure_month_partitions('raw.sensor_readings'::regclass, %s, %s)",
            (history_start, now + timedelta(days=1)),
        )
        conn.execute(
            "insert into raw.equipment (equipment_id, equipment_type, site) "
            "select 'M-' || lpad(i::text, 5, '0'), %s, 'site-' || (i %% 20) "
            "from generate_series(1, %s) i",
            (equipment_type, large),
        )

    def load_history(first: int, last: int) -> None:
        started = time.perf_counter()
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            conn.execute(
                history_sql,
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

    def show(label: str, summary: transform.DbtRunSummary) -> None:
        slowest = sorted(summary.nodes, key=lambda n: -n.seconds)[:6]
        nodes = ", ".join(f"{n.name} {n.seconds:.2f}" for n in slowest)
        console.print(f"  {label}: dbt {summary.seconds:.1f} s; slowest nodes (s): {nodes}")

    def seed_features(hours: int = 1) -> None:
        # Feature rows for the last hour of history only: the incremental run's usual state.
        # Unit tests use fixed 2026 dates that features_since would filter out.
        summary = transform.build(
            settings=settings,
            full_refresh=True,
            extra_args=["--exclude-resource-type", "unit_test"],
            extra_vars={"features_since": (now - timedelta(hours=hours)).isoformat()},
        )
        show(f"seed (full refresh, last {hours} h of features)", summary)

    def one_minute_later(last: int, minute: int) -> float:
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            conn.execute(
                minute_sql, {"ts": now + timedelta(minutes=minute), "last": equipment_id(last)}
            )
        started = time.perf_counter()
        summary = transform.build_after_ingest(settings)
        seconds = time.perf_counter() - started
        show(f"incremental build after minute {minute}: {seconds:.1f} s", summary)
        return seconds

    load_history(1, small)
    seed_features()
    one_minute_later(small, 0)  # the first incremental run also parses the project cold
    results[f"incremental_{size(small)}_s"] = round(one_minute_later(small, 1), 2)

    # The same fleet's last day stamped as one bulk load of now (a gateway back after a day
    # offline, an import), built in full: the runs that follow read back to what their last
    # run saw (the recorded build bounds), against the fixed look-back margin's runs, which
    # read the whole load again for ten minutes (bounds deleted: the margin is what a model
    # without one uses).
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute(
            "update raw.sensor_readings set ingested_at = now() where ts >= %s",
            (now - timedelta(days=1),),
        )
    seed_features(hours=24)
    one_minute_later(small, 4)
    after_bulk = one_minute_later(small, 5)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        conn.execute("delete from ops.dbt_build_bounds")
    margin = one_minute_later(small, 6)
    results[f"incremental_{size(small)}_after_bulk_s"] = round(after_bulk, 2)
    results[f"incremental_{size(small)}_after_bulk_margin_s"] = round(margin, 2)
    results["after_bulk_bound_vs_margin"] = round(after_bulk / margin, 3)

    load_history(small + 1, large)
    seed_features()
    one_minute_later(large, 2)
    results[f"incremental_{size(large)}_s"] = round(one_minute_later(large, 3), 2)

    # Full rebuild of the feature table and the tables it reads, from the raw readings.
    hours = args.full_rebuild_hours or args.history_days * 24
    started = time.perf_counter()
    summary = transform.build(
        settings=settings,
        select=["+fct_equipment_features"],
        full_refresh=True,
        extra_vars={"features_since": (now - timedelta(hours=hours)).isoformat()},
        extra_args=["--exclude-resource-type", "unit_test"],
    )
    seconds = time.perf_counter() - started
    show(f"full rebuild of the last {hours} h: {seconds:.1f} s", summary)
    key = f"full_rebuild_{size(large)}_s"
    if hours >= args.history_days * 24:
        results[key] = round(seconds, 2)
    else:
        # Only the feature rows scale with the hours; the other models always cover everything.
        features = sum(n.seconds for n in summary.nodes if n.name == "fct_equipment_features")
        scale = args.history_days * 24 / hours
        results[f"full_rebuild_{size(large)}_last_{hours}h_s"] = round(seconds, 2)
        results[key] = round(seconds - features + features * scale, 2)
        results[f"full_rebuild_{size(large)}_is_extrapolated"] = True
    return results


if __name__ == "__main__":
    main()
