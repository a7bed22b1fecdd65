"""Run the dbt project (dbt_project/): vars from the catalog and settings, build, docs.

dbt runs in-process through `dbtRunner`. Its connection comes from environment variables the
committed profiles.yml reads (EMPS_DBT_*), set here from the writer role's URL; its target/ and
logs/ live under <EMPS_HOME>/dbt so the source tree stays clean.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from emps.catalog import Catalog, load_catalog
from emps.db import Role, connect, database_url
from emps.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from dbt.cli.main import dbtRunner
    from dbt.contracts.graph.manifest import Manifest
    from dbt_common.events.base_types import EventMsg

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
DBT_SCHEMA = "analytics"  # profiles.yml's schema: every model is built there
AFTER_INGEST_SELECTOR = "after_ingest"
DASHBOARD_STATE_SELECTOR = "dashboard_state"
DASHBOARD_HEALTH_MART = "analytics.mart_equipment_health"
FEATURE_TABLE = "analytics.fct_equipment_features"
# pg_advisory_lock: one dbt build at a time. Builds run inside ingest runs (one at a time) and by
# hand (`emps dbt build`, build-features or score-equipment runs); two incremental builds of the
# same table at once would insert the same rows twice.
BUILD_LOCK_KEY = 7_410_554


class DbtBuildError(RuntimeError):
    """dbt reported failing models or tests (the message names them)."""


@dataclass
class NodeOutcome:
    name: str
    resource_type: str
    status: str
    message: str
    seconds: float


@dataclass
class DbtRunSummary:
    command: str
    success: bool
    seconds: float
    nodes: list[NodeOutcome] = field(default_factory=list)

    @property
    def failures(self) -> list[NodeOutcome]:
        return [n for n in self.nodes if n.status in {"error", "fail", "runtime error"}]

    def describe_failures(self) -> str:
        lines = [f"{n.resource_type} {n.name}: {n.status}: {n.message}" for n in self.failures]
        return "\n".join(lines) or "dbt failed before running any node (see the dbt log above)"


def dbt_paths(settings: Settings | None = None) -> tuple[Path, Path]:
    """(target path, log path) under EMPS_HOME."""
    settings = settings or get_settings()
    root = settings.home / "dbt"
    return root / "target", root / "logs"


def catalog_vars(catalog: Catalog, settings: Settings) -> dict:
    """The catalog as the dbt models need it: channels, and per type its clock and feature grid
    with every length in slots (macros/features.sql)."""
    types = []
    for etype in catalog.equipment_types.values():
        sensors = catalog.type_sensors(etype.name)
        grid = etype.features
        types.append(
            {
                "name": etype.name,
                "axis": etype.clock.kind,
                "slot": grid.slot,
                # The slot in the clock's unit (hours, or counter units): slopes are per unit.
                "slot_units": grid.slot / 3600.0 if etype.clock.kind == "time" else grid.slot,
                "unit_seconds": etype.clock.unit_seconds,
                "life_unit_seconds": etype.clock.life_unit_seconds,
                "windows": list(grid.windows),
                "baseline": grid.baseline,
                "baseline_lag": grid.baseline_lag,
                "baseline_min_slots": grid.baseline_min_slots,
                "horizon_seconds": etype.horizon_seconds,
                "has_settings": bool(catalog.type_settings(etype.name)),
                "bands_complete": not catalog.type_settings(etype.name)
                and all(etype.channels.get(s) is not None for s in sensors),
            }
        )
    return {
        "sensors": catalog.sensor_names,
        "settings": catalog.setting_names,
        "window_count": catalog.window_count,
        "equipment_types": types,
        "norm_min_slots": settings.features.norm_min_slots,
    }


def dbt_vars(settings: Settings | None = None, catalog: Catalog | None = None) -> dict:
    """The dbt vars: the catalog and the settings the models depend on."""
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    definitions = catalog_vars(catalog, settings)
    return {
        **definitions,
        "silent_minutes": settings.thresholds.silent_minutes,
        "model_name": settings.ml.model_name,
        "feature_lateral_max_slots": settings.features.lateral_max_slots,
        "features_fingerprint": features_fingerprint(definitions),
    }


def dbt_env(settings: Settings | None = None) -> dict[str, str]:
    """The EMPS_DBT_* variables profiles.yml reads, from the writer role's URL."""
    settings = settings or get_settings()
    url = urlsplit(database_url(Role.WRITER, settings))
    return {
        "EMPS_DBT_HOST": url.hostname or settings.database.pg_host,
        "EMPS_DBT_PORT": str(url.port or 5432),
        "EMPS_DBT_USER": unquote(url.username or "emps_writer"),
        "EMPS_DBT_PASSWORD": unquote(url.password or ""),
        "EMPS_DBT_DBNAME": url.path.lstrip("/") or settings.database.pg_database,
    }


# dbt reads its connection from the environment (profiles.yml's env_var calls) and keeps global
# state per invocation: one in-process run at a time, so no thread sees another's database.
_IN_PROCESS_RUN = threading.Lock()

# Parsing the project takes seconds, and dbt's partial parsing starts over whenever the vars or
# the target directory change (a catalog, a setting, another EMPS_HOME). A process that runs many
# builds against changing vars (a test worker) can parse each project, vars and database once and
# hand dbt the parsed manifest: what dbt's programmatic API offers for repeated invocations. The
# database is in the key because the parsed nodes name it. Off unless a process asks for it
# (keep_parsed_manifests): a flow run is a process of its own, where a parse with dbt's partial
# parsing is faster (0.65 s against 2.5-4.6 s of linking a passed manifest) and a kept manifest
# holds ~190 MB for the run's whole life (bench/e2e.py: flow runs 933 MB against 742 MB).
_keep_manifests = False
_PARSED_COMMANDS = frozenset({"build", "run", "test"})
_PARSE_OPTIONS = frozenset(
    {"--project-dir", "--profiles-dir", "--target-path", "--log-path", "--vars"}
)
_MANIFESTS: dict[str, Manifest] = {}
_MANIFESTS_KEPT = 8


def keep_parsed_manifests(keep: bool = True) -> None:
    """Have this process reuse each parsed project for later build/run/test invocations."""
    global _keep_manifests
    _keep_manifests = keep


def _project_digest() -> str:
    """A hash of the dbt project's files (not dbt's own output beside them)."""
    digest = hashlib.sha256()
    for folder, subfolders, files in os.walk(DBT_PROJECT_DIR):
        if folder == str(DBT_PROJECT_DIR):
            subfolders[:] = [d for d in subfolders if d not in {"target", "logs", "dbt_packages"}]
        subfolders.sort()
        for name in sorted(files):
            path = Path(folder, name)
            digest.update(str(path.relative_to(DBT_PROJECT_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _parse_args(args: Sequence[str]) -> list[str]:
    """The `dbt parse` command line for a run's `args`: its project, paths and vars."""
    parse = ["--quiet", "parse"]
    for option, value in zip(args, args[1:], strict=False):
        if option in _PARSE_OPTIONS:
            parse += [option, value]
    return parse


def _dbt_runner() -> type[dbtRunner]:
    """dbt's runner class. Its first import also imports snowplow_tracker (dbt's telemetry
    client), which calls logging.basicConfig(): from then on every log record of the process
    that reaches the root logger went to stderr as a bare `INFO:name:message` line (a Prefect
    flow's in `emps bootstrap`). The handler it adds is taken off again."""
    root = logging.getLogger()
    before = list(root.handlers)
    from dbt.cli.main import dbtRunner as runner

    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    return runner


def _parsed_manifest(args: Sequence[str], database: str) -> Manifest | None:
    """The manifest for `args`, parsed now if this process has none for its project, vars and
    database yet; None when dbt cannot parse the project (the run then parses it again and
    reports why)."""
    runner = _dbt_runner()
    parse = _parse_args(args)
    key = hashlib.sha256(
        json.dumps([_project_digest(), database, parse], sort_keys=True).encode()
    ).hexdigest()
    if key not in _MANIFESTS:
        result = runner().invoke(parse)
        if not result.success or result.result is None:
            return None
        while len(_MANIFESTS) >= _MANIFESTS_KEPT:
            del _MANIFESTS[next(iter(_MANIFESTS))]
        _MANIFESTS[key] = result.result
    manifest = _MANIFESTS[key]
    # A run compiles into the nodes: leave them as parsed, so that the next run renders every
    # node again and injects its ephemeral models' CTEs again.
    for node in manifest.nodes.values():
        if hasattr(node, "extra_ctes_injected"):
            node.compiled, node.compiled_code = False, None
            node.extra_ctes_injected, node.extra_ctes = False, []
    return manifest


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def dbt_args(
    command: Sequence[str],
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    select: Sequence[str] | None = None,
    selector: str | None = None,
    full_refresh: bool = False,
    extra: Sequence[str] = (),
    extra_vars: dict | None = None,
) -> list[str]:
    """The full dbt command line for `command` (e.g. ["build"]) against this project."""
    target_path, log_path = dbt_paths(settings)
    # dbt's own console output is off: callers show progress and failures (the CLI) or
    # forward every log line (the flow, to Prefect).
    args = [
        "--quiet",
        *command,
        "--project-dir",
        str(DBT_PROJECT_DIR),
        "--profiles-dir",
        str(DBT_PROJECT_DIR),
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        "--vars",
        json.dumps({**dbt_vars(settings, catalog), **(extra_vars or {})}, sort_keys=True),
    ]
    if select:
        args += ["--select", *select]
    if selector:
        args += ["--selector", selector]
    if select or selector:
        # A partial build runs only the tests whose every parent it builds.
        args += ["--indirect-selection", "cautious"]
    if full_refresh:
        args.append("--full-refresh")
    return args + list(extra)


def run_dbt(
    args: Sequence[str],
    settings: Settings | None = None,
    on_log: Callable[[str, str], None] | None = None,
) -> DbtRunSummary:
    """Run dbt in-process; `on_log(level, message)` receives dbt's log lines (e.g. for Prefect)."""
    import time

    runner = _dbt_runner()
    settings = settings or get_settings()
    callbacks: list[Callable[[EventMsg], None]] = []
    if on_log is not None:

        def forward(event) -> None:
            # Called from dbt's worker threads: an exception here would stall the run.
            with contextlib.suppress(Exception):
                level = event.info.level
                if level in {"info", "warn", "error"} and event.info.msg:
                    on_log(level, str(event.info.msg))

        callbacks.append(forward)
    started = time.perf_counter()
    environment = {**dbt_env(settings), "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    command = next(str(a) for a in args if not str(a).startswith("-"))
    with _IN_PROCESS_RUN, _environment(environment):
        manifest = None
        if _keep_manifests and command in _PARSED_COMMANDS:
            manifest = _parsed_manifest([str(a) for a in args], environment["EMPS_DBT_DBNAME"])
        result = runner(manifest=manifest, callbacks=callbacks).invoke(list(args))
    summary = DbtRunSummary(
        command=command,
        success=bool(result.success),
        seconds=time.perf_counter() - started,
    )
    for node_result in getattr(result.result, "results", None) or []:
        node = node_result.node
        summary.nodes.append(
            NodeOutcome(
                name=node.name,
                resource_type=str(node.resource_type),
                status=str(node_result.status),
                message=str(node_result.message or ""),
                seconds=float(node_result.execution_time or 0.0),
            )
        )
    if result.exception is not None and not summary.nodes:
        summary.nodes.append(NodeOutcome("dbt", "invocation", "error", str(result.exception), 0.0))
    return summary


def build(
    select: Sequence[str] | None = None,
    selector: str | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    catalog: Catalog | None = None,
    on_log: Callable[[str, str], None] | None = None,
    extra_vars: dict | None = None,
    extra_args: Sequence[str] = (),
) -> DbtRunSummary:
    """`dbt build` (models, then their tests); raises DbtBuildError naming what failed.

    `extra_vars` e.g. {"features_since": "2026-01-01T00:00:00+00:00"}: a full refresh computes
    feature rows only from that time on.
    """
    settings = settings or get_settings()
    catalog = catalog or load_catalog(settings.catalog_path)
    with build_lock(settings, on_log):
        if fit_missing_regimes(settings, catalog, on_log) and not full_refresh:
            # New regimes move every level of their type: rebuild what was built without them.
            full_refresh = True
        args = dbt_args(
            ["build"], settings, catalog, select, selector, full_refresh, extra_args, extra_vars
        )
        views = project_views(settings)
        summary = run_dbt(args, settings, on_log)
        _restore_dropped_views(views, summary, settings, catalog, on_log)
    if not summary.success:
        raise DbtBuildError(f"dbt build failed:\n{summary.describe_failures()}")
    return summary


def model_files() -> dict[str, Path]:
    """The project's models by name, each with its SQL file."""
    return {path.stem: path for path in DBT_PROJECT_DIR.glob("models/**/*.sql")}


def project_views(settings: Settings | None = None) -> set[str]:
    """The project's models that are views in the database now."""
    models = model_files()
    with connect(Role.WRITER, settings) as conn:
        rows = conn.execute(
            "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = %s and c.relkind = 'v'",
            (DBT_SCHEMA,),
        ).fetchall()
    return {name for (name,) in rows} & models.keys()


def _restore_dropped_views(
    views: set[str],
    summary: DbtRunSummary,
    settings: Settings,
    catalog: Catalog,
    on_log: Callable[[str, str], None] | None,
) -> None:
    """Build again the views a partial build dropped without building them.

    dbt replaces a view or table by renaming the old one away and dropping it with cascade,
    which takes every view reading it along: a build of `+fct_equipment_features` would leave
    the dashboard's marts over stg_equipment gone until a full build. What the build itself
    selected and did not build (a failure upstream) stays as the build left it."""
    attempted = {node.name for node in summary.nodes if node.status != "success"}
    dropped = sorted(views - project_views(settings) - attempted)
    if not dropped:
        return
    if on_log is not None:
        on_log(
            "info",
            f"building again {len(dropped)} view(s) dropped with what they read: "
            + ", ".join(dropped),
        )
    # `run`, not `build`: the same SQL as before the build, over what the build tested.
    restored = run_dbt(dbt_args(["run"], settings, catalog, dropped), settings, on_log)
    summary.nodes += restored.nodes
    summary.seconds += restored.seconds
    summary.success = summary.success and restored.success


def fit_missing_regimes(
    settings: Settings, catalog: Catalog, on_log: Callable[[str, str], None] | None = None
) -> int:
    """Fit the operating regimes of the types with settings that have none yet and enough
    readings (emps.regimes); how many types were fitted."""
    if not catalog.setting_names:
        return 0
    # numpy comes with the regimes: loaded only for a catalog with operating settings.
    from emps.regimes import ensure_regimes

    with connect(Role.WRITER, settings, autocommit=True) as conn:
        fits = ensure_regimes(conn, catalog, seed=settings.ml.seed)
    for fit in fits:
        if on_log is not None:
            on_log(
                "info",
                f"{fit.equipment_type}: {fit.regimes} operating regime(s) found in "
                f"{fit.readings:,} readings of {', '.join(fit.settings)}; rebuilding its features",
            )
    return len(fits)


@contextmanager
def build_lock(
    settings: Settings | None = None, on_log: Callable[[str, str], None] | None = None
) -> Iterator[None]:
    """Hold the platform's dbt build lock (waiting for a build that holds it). A session lock on
    its own connection: a build whose process dies releases it with the connection."""
    with connect(Role.WRITER, settings, autocommit=True) as conn:
        locked = conn.execute("select pg_try_advisory_lock(%s)", (BUILD_LOCK_KEY,)).fetchone()
        assert locked is not None  # a select without from returns one row
        if not locked[0]:
            if on_log is not None:
                on_log("info", "waiting for another dbt build to finish")
            conn.execute("select pg_advisory_lock(%s)", (BUILD_LOCK_KEY,))
        try:
            yield
        finally:
            # A connection lost meanwhile took the lock with it.
            with contextlib.suppress(Exception):
                conn.execute("select pg_advisory_unlock(%s)", (BUILD_LOCK_KEY,))


# What the stored feature history is computed by: a change to it (an upgrade that adds a feature
# or fixes one) leaves the rows built before it stale, since incremental runs only add rows.
FEATURE_MODEL = "fct_equipment_features"
FEATURE_MACROS = ("macros/features.sql",)
_REF = re.compile(r"""\bref\(\s*['"]([A-Za-z0-9_]+)['"]\s*\)""")


def feature_definition_files() -> list[Path]:
    """The SQL the feature model is computed from: its own file, every model it reads through
    `ref` (followed upstream) and the feature macros. Models beside it (the dashboard's views)
    and where a file sits in the project do not count, so moving or adding one stales nothing."""
    models = model_files()
    seen: set[str] = set()
    pending = [FEATURE_MODEL]
    while pending:
        name = pending.pop()
        if name in seen or name not in models:
            continue
        seen.add(name)
        pending.extend(_REF.findall(models[name].read_text(encoding="utf-8")))
    return [models[name] for name in sorted(seen)] + [DBT_PROJECT_DIR / m for m in FEATURE_MACROS]


def features_fingerprint(definitions: dict | None = None) -> str:
    """A hash of the feature definitions, the SQL and the catalog's grids (`catalog_vars`); full
    builds record it on the feature table."""
    if definitions is None:
        settings = get_settings()
        definitions = catalog_vars(load_catalog(settings.catalog_path), settings)
    digest = hashlib.sha256(json.dumps(definitions, sort_keys=True).encode())
    for path in feature_definition_files():
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def features_outdated(settings: Settings | None = None) -> str | None:
    """Why the stored feature history predates the current feature definitions, or None when it
    does not (or no feature table exists yet)."""
    with connect(Role.WRITER, settings) as conn:
        row = conn.execute(
            "select to_regclass(%(t)s) is not null, obj_description(to_regclass(%(t)s), 'pg_class')",
            {"t": FEATURE_TABLE},
        ).fetchone()
    assert row is not None  # a select without from returns one row
    exists, comment = row
    settings = settings or get_settings()
    definitions = catalog_vars(load_catalog(settings.catalog_path), settings)
    recorded, current = (comment or "").removeprefix("features "), features_fingerprint(definitions)
    if not exists or recorded == current:
        return None
    return (
        f"the feature definitions changed since {FEATURE_TABLE} was built "
        f"({recorded or 'unrecorded'} -> {current})"
    )


def project_is_built(settings: Settings | None = None) -> bool:
    """Whether the feature table exists (a first build creates every model)."""
    with connect(Role.WRITER, settings) as conn:
        row = conn.execute("select to_regclass(%s) is not null", (FEATURE_TABLE,)).fetchone()
    return bool(row and row[0])


def build_after_ingest(
    settings: Settings | None = None, on_log: Callable[[str, str], None] | None = None
) -> DbtRunSummary:
    """What a batch of new readings needs: the `after_ingest` selector, or on a database where
    the project was never built, everything (the selector assumes the views exist)."""
    if project_is_built(settings):
        return build(selector=AFTER_INGEST_SELECTOR, settings=settings, on_log=on_log)
    return build(settings=settings, on_log=on_log)


@dataclass(frozen=True)
class LedgerMark:
    """Where the ingest ledger stood when a build began: its newest file and the files still
    being loaded (a load that commits during the build is invisible to it)."""

    newest_id: int
    in_flight: tuple[int, ...]


def ledger_mark(settings: Settings | None = None) -> LedgerMark:
    with connect(Role.WRITER, settings) as conn:
        newest = conn.execute("select coalesce(max(id), 0) from raw.ingest_files").fetchone()
        assert newest is not None  # an aggregate returns one row
        claimed = conn.execute("select id from raw.ingest_files where status = 'claimed'")
        return LedgerMark(int(newest[0]), tuple(int(r[0]) for r in claimed.fetchall()))


def loaded_since(mark: LedgerMark, settings: Settings | None = None) -> bool:
    """Did readings load after `mark` (a newer file, or one in flight then), which a build that
    began at the mark may have missed?"""
    with connect(Role.WRITER, settings) as conn:
        row = conn.execute(
            "select exists (select 1 from raw.ingest_files "
            "where status in ('loaded', 'partial', 'conflict') "
            "and (id > %s or id = any(%s)))",
            (mark.newest_id, list(mark.in_flight)),
        ).fetchone()
    return bool(row and row[0])


def refresh_dashboard_state(
    settings: Settings | None = None, on_log: Callable[[str, str], None] | None = None
) -> DbtRunSummary | None:
    """Bring the dashboard's last-reading and latest-prediction tables up to date (the
    `dashboard_state` selector: two small incremental tables and their tests).

    None on a database where the dashboard marts were never built: there is nothing to refresh
    yet, and the first full build (bootstrap or build-features) creates them current.
    """
    with connect(Role.WRITER, settings) as conn:
        row = conn.execute(
            "select to_regclass(%s) is not null", (DASHBOARD_HEALTH_MART,)
        ).fetchone()
    if not (row and row[0]):
        return None
    return build(selector=DASHBOARD_STATE_SELECTOR, settings=settings, on_log=on_log)


def docs(settings: Settings | None = None, on_log=None) -> Path:
    """Generate dbt's docs site (lineage graph included) as one offline HTML file; its path."""
    args = dbt_args(["docs", "generate", "--static"], settings)
    summary = run_dbt(args, settings, on_log)
    if not summary.success:
        raise DbtBuildError(f"dbt docs generate failed:\n{summary.describe_failures()}")
    target_path, _ = dbt_paths(settings)
    return target_path / "static_index.html"


def source_freshness(settings: Settings | None = None, on_log=None) -> DbtRunSummary:
    """`dbt source freshness`: is raw.sensor_readings still receiving data?"""
    return run_dbt(dbt_args(["source", "freshness"], settings), settings, on_log)
