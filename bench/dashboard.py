"""Server-side time of each dashboard page's data queries, at 1,000 and 10,000 equipment.

    uv run python bench/dashboard.py [--sizes 1000 10000] [--days 90] [--repeat 5]

A fresh temporary database gets `--days` of history per equipment, generated with SQL
generate_series: hourly readings for the whole period plus one-minute readings over the last hour
(what the freshness figures count), one equipment with one-minute readings over the whole period
(the one the detail page opens), a prediction every 6 hours plus a current one, alerts, tasks,
failures, one ingest file a minute and quarantined rows. The dashboard marts are built with
dbt (a full build of just those marts and their parents); then one scoring round (a reading and a
prediction per equipment) is added and the refresh the scoring flow runs after it (dbt build
--selector dashboard_state) is timed: that is what keeping the pages current costs per minute.

Each page's time is the median over `--repeat` runs of every emps.queries call that page makes
on first load (no Streamlit cache), measured in this process. Target: every page < 500 ms at
10,000 equipment. Last line: {"bench": "dashboard", "equipment": N, "worst_page_ms": ...,
"pages_ms": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _tempdb import temporary_platform

SITES = [f"SITE-{i:02d}" for i in range(1, 11)]
DETAIL_EQUIPMENT = "GEN-000005"  # n % 5 == 0: the first catalog type
CALL_MS: dict[str, list[float]] = {}  # per query function, for --detail


def generate(conn, first: int, last: int, days: int, now: datetime, catalog) -> None:
    """Equipment numbers first..last (inclusive) with `days` of history ending at `now`."""
    types = list(catalog.equipment_types.values())
    sensors = catalog.sensor_names
    start = now - timedelta(days=days)
    type_cases = " ".join(
        f"when {i} then '{t.name}'"
        for i, t in enumerate(types)  # catalog names: validated identifiers
    )
    prefix_cases = " ".join(f"when {i} then '{t.id_prefix}'" for i, t in enumerate(types))
    params = {"first": first, "last": last, "start": start, "now": now, "n_types": len(types)}
    conn.execute(
        f"""
        insert into raw.equipment (equipment_id, equipment_type, site, registered_at, source)
        select (case n %% %(n_types)s {prefix_cases} end) || '-' || lpad(n::text, 6, '0'),
               case n %% %(n_types)s {type_cases} end,
               'SITE-' || lpad((n %% 10 + 1)::text, 2, '0'), %(start)s, 'import'
        from generate_series(%(first)s::int, %(last)s::int) n
        """,  # noqa: S608 - catalog names only
        params,
    )
    # Middle of the valid range plus noise: values only need the right shape for the queries.
    values = ", ".join(
        f"{(s.valid_range[0] + s.valid_range[1]) / 2} + random() * {(s.valid_range[1] - s.valid_range[0]) / 20}"
        for s in catalog.sensors.values()
    )
    columns = ", ".join(sensors)
    # This batch's equipment, for the inserts below.
    conn.execute("create temp table if not exists batch (equipment_id text primary key)")
    conn.execute("truncate batch")
    conn.execute(
        "insert into batch select equipment_id from raw.equipment "
        "where substring(equipment_id from '[0-9]+$')::int between %(first)s and %(last)s",
        params,
    )
    conn.execute(
        f"""
        insert into raw.sensor_readings (equipment_id, ts, ingested_at, {columns})
        select e.equipment_id, g, g, {values}
        from batch e,
             generate_series(date_trunc('hour', %(start)s::timestamptz),
                             %(now)s::timestamptz - interval '61 minutes', interval '1 hour') g
        """,  # noqa: S608
        params,
    )
    # The last hour at one reading a minute, except 2 % silent equipment.
    conn.execute(
        f"""
        insert into raw.sensor_readings (equipment_id, ts, ingested_at, {columns})
        select e.equipment_id, g, g, {values}
        from batch e,
             generate_series(%(now)s::timestamptz - interval '60 minutes', %(now)s::timestamptz,
                             interval '1 minute') g
        where hashtext(e.equipment_id) %% 50 <> 0
        """,  # noqa: S608
        params,
    )
    conn.execute(
        """
        insert into ops.predictions (equipment_id, ts, predicted_at, failure_probability,
            health_score, severity, days_until_failure, model_version, explanation)
        select e.equipment_id, g, g, p, round(100 * (1 - p)),
               case when p >= 0.85 then 'CRITICAL' when p >= 0.6 then 'HIGH'
                    when p >= 0.3 then 'MEDIUM' else 'LOW' end,
               case when p >= 0.3 then 14 * (1 - p) end, '3',
               '[{"feature": "vibration_slope_w3", "label": "vibration trend over 24 h",
                  "sensor": "vibration", "contribution": 0.2, "value": 1.1}]'::jsonb
        from batch e
        cross join lateral (
            select g, power(random(), 3) as p
            from generate_series(%(start)s::timestamptz, %(now)s::timestamptz - interval '6 hours',
                                 interval '6 hours') g
            union all
            select %(now)s::timestamptz - interval '10 minutes', power(random(), 3)
        ) s
        """,
        params,
    )
    conn.execute(
        """
        insert into ops.alerts (equipment_id, severity, message, status, created_at,
            acknowledged_at, acknowledged_by, resolved_at, resolved_by)
        select equipment_id, severity, severity || ' failure risk on ' || equipment_id,
               case when k = 0 and r < 0.2 then 'open' when k = 0 and r < 0.4 then 'acknowledged'
                    else 'resolved' end,
               created, created + interval '7 minutes',
               'bench', created + interval '2 days', 'bench'
        from (
            select e.equipment_id, k, random() as r,
                   (array['MEDIUM', 'HIGH', 'CRITICAL'])[1 + floor(random() * 3)::int] as severity,
                   %(now)s::timestamptz - (k * 20 + random() * 15) * interval '1 day' as created
            from batch e, generate_series(0, 3) k
        ) a
        """,
        params,
    )
    conn.execute(
        "update ops.alerts set resolved_at = null, resolved_by = null, "
        "acknowledged_at = case when status = 'open' then null else acknowledged_at end, "
        "acknowledged_by = case when status = 'open' then null else acknowledged_by end "
        "where status <> 'resolved' and resolved_at is not null"
    )
    conn.execute(
        """
        insert into ops.maintenance_tasks (equipment_id, task_type, priority, status,
            scheduled_date, completed_date, outcome)
        select e.equipment_id, (array['inspection', 'preventive', 'repair'])[1 + k],
               1 + (random() * 4)::int,
               case when k = 0 then 'scheduled' else 'completed' end,
               %(now)s::timestamptz + (case when k = 0 then 1 else -30 * k end)
                   * (1 + random() * 10) * interval '1 day',
               case when k = 0 then null else %(now)s::timestamptz - 30 * k * interval '1 day' end,
               case when k = 0 then null else 'no_fault_found' end
        from batch e, generate_series(0, 2) k
        """,
        params,
    )
    conn.execute(
        """
        insert into raw.failure_events (equipment_id, failed_at, failure_mode, source)
        select e.equipment_id, %(now)s::timestamptz - random() * (%(now)s::timestamptz - %(start)s),
               'bearing', 'simulator'
        from batch e where hashtext(e.equipment_id) %% 20 = 0
        """,
        params,
    )


def generate_shared(conn, days: int, now: datetime, catalog) -> None:
    """Rows that do not scale with equipment: ingest ledger, quarantine, the detail equipment."""
    params = {"start": now - timedelta(days=days), "now": now}
    conn.execute(
        """
        insert into raw.ingest_files (file_name, sha256, size_bytes, format, received_at,
            finished_at, status, rows_total, rows_loaded, rows_duplicate, rows_quarantined)
        select 'drop-' || extract(epoch from g)::bigint || '.csv', md5(g::text), 90000, 'csv', g, g,
               case when random() < 0.02 then 'partial' else 'loaded' end, 1000, 990, 5, 5
        from generate_series(%(start)s::timestamptz, %(now)s::timestamptz, interval '1 minute') g
        """,
        params,
    )
    conn.execute(
        """
        insert into raw.quarantined_rows (ingest_file_id, file_name, row_number, equipment_id,
            reasons, raw_values, quarantined_at)
        select f.id, f.file_name, 7, %(id)s, array['vibration: -3 is below 0'],
               '{"vibration": "-3"}', f.received_at
        from raw.ingest_files f where f.status = 'partial'
        """,
        {"id": DETAIL_EQUIPMENT},
    )
    values = ", ".join(
        f"{(s.valid_range[0] + s.valid_range[1]) / 2} + random()" for s in catalog.sensors.values()
    )
    conn.execute(
        f"""
        insert into raw.sensor_readings (equipment_id, ts, ingested_at,
            {", ".join(catalog.sensor_names)})
        select %(id)s, g, g, {values}
        from generate_series(%(start)s::timestamptz, %(now)s::timestamptz, interval '1 minute') g
        on conflict do nothing
        """,  # noqa: S608
        {**params, "id": DETAIL_EQUIPMENT},
    )
    conn.execute(
        """
        insert into ops.model_promotions (model_name, alias, to_version, promoted_by, promoted_at,
            metrics)
        select 'equipment-failure', 'champion', v::text, 'bench', %(now)s::timestamptz - (13 - v)
               * interval '7 days', jsonb_build_object('roc_auc', 0.8 + v / 100.0)
        from generate_series(1, 12) v
        """,
        params,
    )


def scoring_round(conn, at: datetime, catalog) -> None:
    """What one minute of the running platform adds: a reading and a prediction per equipment."""
    values = ", ".join(
        f"{(s.valid_range[0] + s.valid_range[1]) / 2} + random()" for s in catalog.sensors.values()
    )
    conn.execute(
        f"""
        insert into raw.sensor_readings (equipment_id, ts, {", ".join(catalog.sensor_names)})
        select equipment_id, %(at)s, {values} from raw.equipment
        where hashtext(equipment_id) %% 50 <> 0
        on conflict do nothing
        """,  # noqa: S608
        {"at": at},
    )
    conn.execute(
        """
        insert into ops.predictions (equipment_id, ts, failure_probability, health_score,
            severity, days_until_failure, model_version, explanation)
        select equipment_id, %(at)s, p, round(100 * (1 - p)),
               case when p >= 0.85 then 'CRITICAL' when p >= 0.6 then 'HIGH'
                    when p >= 0.3 then 'MEDIUM' else 'LOW' end,
               case when p >= 0.3 then 14 * (1 - p) end, '3', '[]'::jsonb
        from (select equipment_id, power(random(), 3) as p from raw.equipment) s
        """,
        {"at": at},
    )


def page_queries(now: datetime) -> dict[str, Callable[[], object]]:
    """What each page reads on first load, through emps.queries (as the read-only role)."""
    from emps import queries
    from emps.reports import build_report

    week, month = now - timedelta(days=7), now - timedelta(days=30)

    def run(*calls: Callable[[], object]) -> Callable[[], None]:
        def all_calls() -> None:
            for call in calls:
                began = time.perf_counter()
                call()
                name = getattr(call, "__qualname__", "?").replace("page_queries.<locals>.", "")
                CALL_MS.setdefault(name, []).append((time.perf_counter() - began) * 1000)

        return all_calls

    return {
        "overview": run(
            queries.sites,
            queries.equipment_types,
            queries.activity_summary,
            queries.thresholds,
            queries.fleet_summary,
            lambda: queries.fleet_health(limit=1000),
        ),
        "equipment": run(
            queries.equipment_ids,
            lambda: queries.equipment_health(DETAIL_EQUIPMENT),
            queries.thresholds,
            lambda: queries.prediction_history(DETAIL_EQUIPMENT, week, now),
            lambda: queries.sensor_trend(DETAIL_EQUIPMENT, week, now),
            lambda: queries.envelopes("generator"),
            lambda: queries.alerts(equipment_id=DETAIL_EQUIPMENT),
            lambda: queries.maintenance_history(DETAIL_EQUIPMENT),
        ),
        "equipment_90d_trend": run(
            lambda: queries.sensor_trend(DETAIL_EQUIPMENT, now - timedelta(days=90), now),
            lambda: queries.prediction_history(DETAIL_EQUIPMENT, now - timedelta(days=90), now),
        ),
        "alerts": run(
            queries.sites,
            lambda: queries.alerts(["open", "acknowledged"], since=month, until=now),
        ),
        "maintenance": run(queries.sites, queries.maintenance_schedule, queries.equipment_ids),
        "analytics": run(
            lambda: queries.alert_statistics(month, now),
            lambda: queries.failures_caught(month, now),
            queries.model_promotions,
            lambda: queries.ingest_volume(month, now),
        ),
        "data_quality": run(queries.ingest_files, queries.quarantined_rows),
        "reports_site_week": run(lambda: build_report("site:SITE-01", week, now)),
        "admin": run(queries.users, queries.thresholds_table, queries.audit_log),
    }


def measure(pages: dict[str, Callable[[], None]], repeat: int) -> dict[str, float | None]:
    """Median ms per page; None when a query hit the statement timeout (EMPS_QUERY_TIMEOUT_MS)."""
    import psycopg

    timings: dict[str, float | None] = {}
    for name, load in pages.items():
        try:
            load()  # warm the server's caches, as a running dashboard would be
            samples = []
            for _ in range(repeat):
                began = time.perf_counter()
                load()
                samples.append((time.perf_counter() - began) * 1000)
            timings[name] = round(statistics.median(samples), 1)
        except psycopg.errors.QueryCanceled:
            timings[name] = None
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="Keep the temporary database")
    parser.add_argument("--detail", action="store_true", help="Also print each query's time")
    parser.add_argument(
        "--dbt-project", type=Path, default=None, help="Another dbt project (e.g. a patched copy)"
    )
    args = parser.parse_args()

    env = {
        # Long enough to measure slow marts rather than cancel them.
        "EMPS_QUERY_TIMEOUT_MS": os.environ.get("BENCH_QUERY_TIMEOUT_MS", "60000"),
    }
    os.environ.setdefault("DO_NOT_TRACK", "1")
    result: dict = {}
    with temporary_platform("dashboard", env, keep=args.keep) as platform:
        if args.keep:
            print(f"keeping the temporary home {platform.home}", flush=True)
        result = run(args, platform.settings)
    print(json.dumps(result))


def run(args: argparse.Namespace, settings) -> dict:
    """Generate each size's data in turn on top of the last, refresh the marts, time the pages."""
    from emps import transform
    from emps.catalog import load_catalog
    from emps.db import Role, connect
    from emps.migrate import ensure_partitions
    from emps.queries import DASHBOARD_MARTS
    from emps.transform import dbt_args, run_dbt

    if args.dbt_project is not None:
        transform.DBT_PROJECT_DIR = args.dbt_project.resolve()

    catalog = load_catalog(settings.catalog_path)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    with connect(Role.OWNER, settings, autocommit=True) as conn:
        ensure_partitions(conn, settings, start=now - timedelta(days=args.days + 31))
    marts = [f"+{m}" for m in DASHBOARD_MARTS]
    result: dict = {}
    done = 0
    for size in sorted(args.sizes):
        began = time.perf_counter()
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            generate(conn, done + 1, size, args.days, now, catalog)
            if done == 0:
                generate_shared(conn, args.days, now, catalog)
            conn.execute("vacuum analyze")
            readings = conn.execute("select count(*) from raw.sensor_readings").fetchone()[0]
        done = size
        print(
            f"{size:,} equipment: {readings:,} readings generated in "
            f"{time.perf_counter() - began:.0f} s",
            flush=True,
        )
        # A full build after the data, as a bootstrap would; then one scoring round and the
        # refresh that follows every scoring run (its time is the per-minute cost).
        summary = run_dbt(dbt_args(["run"], settings, select=marts, full_refresh=True), settings)
        if not summary.success:
            raise SystemExit(
                f"dbt run of the dashboard marts failed:\n{summary.describe_failures()}"
            )
        build_s = sum(n.seconds for n in summary.nodes if n.name.startswith("mart_"))
        with connect(Role.OWNER, settings, autocommit=True) as conn:
            scoring_round(conn, now + timedelta(minutes=1), catalog)
        refresh = transform.build(selector=transform.DASHBOARD_STATE_SELECTOR, settings=settings)
        print(
            f"  dashboard marts: full build {build_s:.1f} s (mart nodes); refresh after a "
            f"scoring round {refresh.seconds:.1f} s (dbt build --selector "
            f"{transform.DASHBOARD_STATE_SELECTOR}, "
            f"{sum(n.seconds for n in refresh.nodes if n.resource_type == 'model'):.1f} s in models)",
            flush=True,
        )
        CALL_MS.clear()
        pages = measure(page_queries(now), args.repeat)
        if args.detail:
            for name, samples in sorted(CALL_MS.items()):
                print(f"    {name:<24} {statistics.median(samples):8.1f} ms", flush=True)
        timeout_ms = settings.database.query_timeout_ms
        for name, ms in pages.items():
            if ms is None:
                print(f"  {name:<22} timed out (> {timeout_ms} ms per query)", flush=True)
                continue
            flag = "" if ms < 500 else "  <-- over 500 ms"
            print(f"  {name:<22} {ms:8.1f} ms{flag}", flush=True)
        result = {
            "bench": "dashboard",
            "equipment": size,
            "days": args.days,
            "readings": readings,
            "worst_page_ms": max(
                (ms if ms is not None else float(timeout_ms)) for ms in pages.values()
            ),
            "timed_out": sorted(name for name, ms in pages.items() if ms is None),
            "pages_ms": pages,
            "marts_build_s": round(build_s, 1),
            "refresh_s": round(refresh.seconds, 1),
        }
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
