"""First start of an empty install: history (a fleet pack's, or simulated), features, a first
champion model.

Each step is skipped when its result already exists, so later starts pass through in seconds: a
fleet pack imported before and unchanged since is not read again. For the same reason each step
imports what it runs (the simulator, dbt, training, the scoring flow) only when it runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from emps.db import Role, connect, one
from emps.settings import Settings, get_settings

console = Console()


@dataclass
class BootstrapReport:
    steps: dict[str, float] = field(default_factory=dict)
    champion: str | None = None


def _has_readings(settings: Settings) -> bool:
    with connect(Role.READER, settings) as conn:
        return one(conn.execute("select exists (select 1 from raw.sensor_readings)"))[0]


def _has_features(settings: Settings) -> bool:
    with connect(Role.READER, settings) as conn:
        table = one(conn.execute("select to_regclass('analytics.fct_equipment_features')"))[0]
        if table is None:
            return False
        found = one(conn.execute("select exists (select 1 from analytics.fct_equipment_features)"))
        return found[0]


def backfill_history(settings: Settings) -> int:
    from emps.catalog import load_catalog
    from emps.simulator.backfill import backfill, history_window
    from emps.simulator.fleet import Fleet, Realism

    fleet = Fleet(
        load_catalog(settings.catalog_path),
        settings.simulator.equipment,
        settings.simulator.seed,
        Realism.named(settings.simulator.realism),
    )
    interval = settings.simulator.history_interval_s
    start, stop = history_window(settings.simulator.history_days, interval, None)
    expected = len(fleet) * settings.simulator.history_days * 86_400 // interval
    with Progress(
        TextColumn("  simulated history"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("history", total=expected)
        report = backfill(
            fleet, start, stop, interval, settings, progress=lambda n: progress.advance(task, n)
        )
    console.print(
        f"  {report.rows:,} readings for {len(fleet)} equipment over "
        f"{settings.simulator.history_days} days ({report.rows_per_s:,.0f} rows/s)"
    )
    return report.rows


def import_fleet(settings: Settings, root: Path) -> Settings:
    """Import the fleet pack at `root` unless this install holds it unchanged (same files);
    returns the settings with the pack's catalog. Raises FleetRefused when the fleet has nothing
    to run on (no equipment or no readings loaded), naming the pack's problems."""
    from emps.fleet.console import import_progress, print_import_report
    from emps.fleet.importer import (
        check_catalog_setting,
        import_pack,
        installed_catalog,
        pack_digest,
        write_catalog,
    )
    from emps.fleet.pack import read_pack
    from emps.fleet.running import FleetRefused, last_import

    root = Path(root).expanduser().resolve()
    pack = read_pack(root)
    target = installed_catalog(settings)
    check_catalog_setting(pack, settings, target)
    if write_catalog(pack, target) or settings.catalog_path != target:
        get_settings.cache_clear()  # this process's later reads see the pack's catalog
    settings = settings.model_copy(update={"catalog_path": target})
    known = last_import(settings, digest=pack_digest(root))
    problems: list[str] = []
    if known is not None:
        console.print(
            f"  fleet pack {root}: unchanged since its import on "
            f"{known.imported_at:%Y-%m-%d %H:%M %Z} ({known.equipment} equipment, "
            f"{known.readings_loaded:,} readings loaded, {known.problems} refusal(s)); "
            "nothing to import",
            highlight=False,
            soft_wrap=True,
        )
    else:
        with import_progress(console) as on_progress:
            report = import_pack(root, settings, on_progress=on_progress, catalog_target=target)
        print_import_report(report, console)
        problems = [str(p) for p in report.problems]
        if problems:
            log_path = settings.log_dir / "fleet-import.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as handle:
                print_import_report(report, Console(file=handle, width=120), problems_shown=None)
            console.print(f"  every refusal is listed in {log_path}", highlight=False)
    with connect(Role.READER, settings) as conn:
        equipment = one(conn.execute("select count(*) from raw.equipment"))[0]
        readings = one(conn.execute("select exists (select 1 from raw.sensor_readings)"))[0]
    if not equipment or not readings:
        missing = "equipment" if not equipment else "readings"
        listed = "".join(f"\n  {p}" for p in problems[:10])
        raise FleetRefused(
            f"the fleet pack {root} gave the platform no {missing} to run on"
            + (f"; its problems:{listed}" if listed else "")
            + f"\n(`emps fleet import {root} --dry-run` checks a pack without writing anything)"
        )
    return settings


def build_features(settings: Settings, full_refresh: bool = False) -> None:
    """A full dbt build; dbt's own log goes to var/log/bootstrap-dbt.log, a spinner shows progress."""
    import os

    from emps import transform

    log_path = settings.log_dir / "bootstrap-dbt.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    os.environ["DBT_QUIET"] = "true"
    try:
        with log_path.open("a") as log, console.status("  dbt build") as status:

            def on_log(level: str, message: str) -> None:
                log.write(f"{level}: {message}\n")
                if " of " in message and ("START" in message or "OK" in message):
                    status.update(f"  dbt build: {message.strip()[:90]}")

            summary = transform.build(settings=settings, on_log=on_log, full_refresh=full_refresh)
    finally:
        os.environ.pop("DBT_QUIET", None)
    console.print(f"  dbt build: {len(summary.nodes)} nodes in {summary.seconds:.1f} s")


def rebuild_outdated_features(settings: Settings) -> bool:
    """Rebuild every model when the stored feature history was computed by older definitions
    (an upgrade); returns whether it did. Incremental runs only add rows, so without it history
    would keep old values, and a feature the upgrade added would stay empty there, for training
    and scoring alike."""
    from emps.transform import features_outdated

    stale = features_outdated(settings)
    if stale is None:
        return False
    console.print(f"  {stale}: rebuilding every model from the stored readings")
    build_features(settings, full_refresh=True)
    return True


@contextmanager
def step_progress(label: str, total: int, on: Console = console) -> Iterator[Callable[[str], None]]:
    """A bar of `total` steps; calling the function it yields with a step's description starts
    that step (and counts the one before as done)."""
    with Progress(
        TextColumn(f"  {label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=on,
    ) as progress:
        task = progress.add_task("", total=total)

        def start(description: str) -> None:
            if progress.tasks[0].description:
                progress.advance(task)
            progress.update(task, description=description)

        yield start
        progress.update(task, completed=total, description="done")


def train_first_champion(settings: Settings) -> str:
    from emps.ml.train import retrain, training_steps

    with step_progress("first model", training_steps(settings) + 2) as on_step:
        result, decision = retrain("emps-up-bootstrap", settings, on_step)
    metrics = result.metrics
    evaluated = int(metrics.get("failures_evaluated", 0))
    if evaluated:
        warned = (
            f"{metrics.get('failures_warned', 0):.0f} of {evaluated} held-out failures warned "
            f"{settings.alerting.inspection_within_days}+ days ahead"
        )
    else:  # "0 of 0 warned" would read as a model that warns of nothing
        warned = (
            "no failure fell in the held-out part it was judged on "
            f"({metrics.get('equipment_evaluated', 0):.0f} equipment, "
            f"{metrics.get('equipment_months', 0):.1f} equipment-months): too little to say "
            "how early it warns"
        )
    console.print(
        f"  model v{result.version}: {warned}, "
        f"{metrics.get('false_alert_episodes_per_100_equipment_months', float('nan')):.1f} "
        f"false alerts per 100 equipment-months, PR-AUC "
        f"{metrics.get('pr_auc', float('nan')):.2f} — {decision.reason}"
    )
    return result.version


def bootstrap(
    settings: Settings | None = None, with_history: bool = True, fleet: Path | None = None
) -> BootstrapReport:
    """Make the platform able to score from its first minute: on the history of the fleet pack
    `fleet` (imported unless already), else, on an empty database and `with_history`, on
    simulated history."""
    from emps.fleet.running import imports_without_features, last_import, mark_features_built
    from emps.ml.registry import CHAMPION, alias_version

    settings = settings or get_settings()
    report = BootstrapReport()

    def step(name: str, action) -> None:
        began = time.monotonic()
        action()
        report.steps[name] = time.monotonic() - began

    if fleet is not None:
        began = time.monotonic()
        settings = import_fleet(settings, fleet)
        report.steps["fleet"] = time.monotonic() - began
    elif with_history and last_import(settings) is None and not _has_readings(settings):
        step("history", lambda: backfill_history(settings))
    unbuilt = imports_without_features(settings)
    if not _has_features(settings):
        step("features", lambda: build_features(settings))
    else:
        began = time.monotonic()
        if rebuild_outdated_features(settings):
            report.steps["features"] = time.monotonic() - began
        elif unbuilt:
            # Incremental: a build picks up the readings loaded since its last run.
            step("features", lambda: build_features(settings))
    if unbuilt and _has_features(settings):
        mark_features_built(settings, unbuilt)
    champion = alias_version(CHAMPION, settings)
    if champion is not None:
        from emps.ml.registry import adopt_unrecorded_champions

        for version in adopt_unrecorded_champions(settings):
            console.print(
                f"  champion v{version} was promoted before EMPS recorded model hashes: its files "
                "as they are now are recorded, and every later load is checked against them"
            )
    if champion is not None and _has_features(settings):
        missing = _features_the_champion_lacks(champion, settings)
        if missing:
            console.print(
                f"  champion v{champion} reads {len(missing)} feature(s) the current definitions "
                f"no longer build ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}):"
                " training a model on today's features"
            )
            champion = None
    if champion is None and _has_features(settings):
        from emps.ml.evaluate import NotEnoughData

        try:
            champion = train_first_champion(settings)
        except NotEnoughData as reason:
            # An honest evaluation needs history before and after a held-out gap; with too
            # little, say so and keep running: `emps model train` works once data has grown.
            console.print(f"  [yellow]no first model yet: {reason}[/]")
    elif champion is None:
        console.print(
            "  [yellow]no readings yet, so no model: scoring starts once data arrives and "
            "`emps model train` has run[/]"
        )
    report.champion = champion
    if champion is not None and _has_unscored(settings):
        step("scores", lambda: score_fleet())
    return report


def _features_the_champion_lacks(version: str, settings: Settings) -> list[str]:
    """The champion's features missing from the feature table (after an upgrade or a catalog
    change rebuilt it): such a champion cannot score, and the gate lets any challenger win."""
    from emps.ml.registry import load_version, recorded_digest

    with connect(Role.READER, settings) as conn:
        columns = {
            row[0]
            for row in conn.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'analytics' and table_name = 'fct_equipment_features'"
            )
        }
    try:
        model, _ = load_version(version, settings, recorded_digest(version, settings))
    except Exception:
        return []  # unreachable or unreadable: scoring says why; nothing to retrain for here
    return [name for name in model.feature_names or [] if name not in columns]


@contextmanager
def quiet_console_logs(level: int = logging.WARNING) -> Iterator[None]:
    """Records under `level` kept off the console: the root logger's stream handlers (where
    Prefect's run loggers print) raised to it for the block; other handlers (Prefect's API
    handler, a log file) still get every record."""
    streams = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    levels = [h.level for h in streams]
    for handler in streams:
        handler.setLevel(max(handler.level, level))
    try:
        yield
    finally:
        for handler, former in zip(streams, levels, strict=True):
            handler.setLevel(former)


def _has_unscored(settings: Settings) -> bool:
    with connect(Role.READER, settings) as conn:
        return not one(conn.execute("select exists (select 1 from ops.predictions)"))[0]


def score_fleet() -> None:
    """Score every equipment once, through the scoring flow (its events reach the alert flow).
    Its log stays in the Prefect UI: the console shows the summary, and warnings."""
    from emps.flows.score import score_equipment

    with quiet_console_logs():
        summary = score_equipment(only_unscored=False)
    console.print(
        f"  scored {summary['scored']} equipment with model v{summary['model_version']}: "
        f"{summary['by_severity']}"
    )
