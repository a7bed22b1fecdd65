"""The `ingest-sensor-drops` flow: load what devices dropped in the landing zone, every minute and
whenever the landing watcher announces new files."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from emps import transform
from emps.flows.run_log import prefect_log_forwarder
from emps.flows.transform import build_features
from emps.ingest import corrections
from emps.ingest.landing import ArrivalLog, Landing
from emps.ingest.pipeline import (
    FileOutcome,
    IngestReport,
    files_waiting,
    ingest_landing,
    stage_into_incoming,
    stop_watching_arrivals,
    watch_arrivals,
)
from emps.ingest.watch import ALIVE_EVENT, RESOURCE_ID, Heartbeat
from emps.settings import Settings, get_settings

# Beyond this many ids the loaded event carries only the count; consumers then read
# raw.sensor_readings by ingest_file_id.
MAX_IDS_IN_EVENT = 5000
MAX_ARTIFACT_ROWS = 200
MAX_ARTIFACT_TEXT = 300
HANDOVER_DELAY_S = 5
# A batch's clean files are named in its log line up to this many.
MAX_NAMED_CLEAN_FILES = 20
# Files of a batch that did not load cleanly get their own log line and event up to this many;
# past it, one line and one event count the rest.
MAX_FILE_EVENTS = 20
# Control characters, and the Unicode ones that reorder or break lines, shown as code points.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$&:=\"'^])")


@task(name="stage-files", cache_policy=NONE)
def stage_files(paths: list[str]) -> list[str]:
    """Copy the given files or folders into landing/incoming so this run ingests them."""
    return stage_into_incoming([Path(p) for p in paths], get_settings())


@task(name="ingest-drop-files", cache_policy=NONE, retries=2, retry_delay_seconds=10)
def ingest_drop_files(names: list[str] | None, limit: int | None) -> IngestReport:
    """Claim, parse, validate and load waiting drop files in batches; archive or quarantine each.
    Logs a JSON line per file that did not load cleanly (the first MAX_FILE_EVENTS of a batch,
    then a count), and one line for those that did: the ledger, raw.ingest_files, and the run
    table keep every file."""
    logger = get_run_logger()
    clean: list[str] = []
    logged: Counter[str] = Counter()
    unlogged: Counter[str] = Counter()

    def log_file(outcome: FileOutcome) -> None:
        if outcome.status == "loaded" and not outcome.warnings:
            clean.append(outcome.file)
        elif logged.total() >= MAX_FILE_EVENTS:
            unlogged[outcome.status] += 1
        else:
            logged[outcome.status] += 1
            problem = outcome.status in ("quarantined", "partial", "conflict")
            level = logging.WARNING if problem else logging.INFO
            logger.log(level, json.dumps(outcome.log_record(), ensure_ascii=False))

    report = ingest_landing(
        get_settings(),
        names=names,
        limit=limit,
        on_file=log_file,
        flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None,
    )
    if clean:
        logger.info(clean_files_line(clean))
    if unlogged:
        counts = ", ".join(f"{n:,} {status}" for status, n in unlogged.most_common())
        logger.warning(
            f"{unlogged.total():,} more file(s) not loaded cleanly ({counts}): see raw.ingest_files"
        )
    return report


def clean_files_line(files: list[str], named: int = MAX_NAMED_CLEAN_FILES) -> str:
    """`3 files loaded cleanly: a.csv, b.csv, c.csv`; past `named` files, the first and last."""
    count = f"{len(files):,} file{'s' if len(files) != 1 else ''} loaded cleanly"
    if len(files) <= named:
        return f"{count}: {', '.join(files)}"
    return f"{count}: {files[0]} ... {files[-1]} (every file in raw.ingest_files)"


@task(name="publish-run-table", cache_policy=NONE)
def publish_run_table(report: IngestReport) -> None:
    """A markdown artifact: one row per file with its counts, so the UI shows what happened."""
    create_markdown_artifact(
        key="ingest-run", markdown=run_markdown(report), description="Files of this ingest run"
    )


@task(name="emit-ingest-events", cache_policy=NONE)
def emit_ingest_events(report: IngestReport) -> int:
    """`emps.ingest.file-quarantined` per quarantined file (the first MAX_FILE_EVENTS of a
    batch; past them one `emps.ingest.files-quarantined` with the count and the ledger ids, so a
    storm of bad files cannot flood the Prefect server), then one `emps.ingest.loaded`."""
    emitted = 0
    quarantined = [o for o in report.files if o.status == "quarantined"]
    for outcome in quarantined[:MAX_FILE_EVENTS]:
        emit_event(
            event="emps.ingest.file-quarantined",
            resource={
                "prefect.resource.id": f"emps.ingest.file.{outcome.ledger_id}",
                "prefect.resource.name": outcome.file,
            },
            payload={
                "ingest_file_id": outcome.ledger_id,
                "file": outcome.file,
                "reason": outcome.error,
                "rows_quarantined": outcome.rows_quarantined,
            },
        )
        emitted += 1
    rest = quarantined[MAX_FILE_EVENTS:]
    if rest:
        emit_event(
            event="emps.ingest.files-quarantined",
            resource={"prefect.resource.id": f"emps.ingest.run.{report.run_id}"},
            payload={
                "files": len(rest),
                "ingest_file_ids": [o.ledger_id for o in rest][:MAX_IDS_IN_EVENT],
                "rows_quarantined": sum(o.rows_quarantined for o in rest),
            },
        )
        emitted += 1
    loaded = [o for o in report.files if o.rows_loaded > 0]
    if loaded:
        ids = sorted(report.equipment_ids)
        emit_event(
            event="emps.ingest.loaded",
            resource={"prefect.resource.id": f"emps.ingest.run.{report.run_id}"},
            payload={
                "equipment_count": len(ids),
                "equipment_ids": ids if len(ids) <= MAX_IDS_IN_EVENT else None,
                "ingest_file_ids": [o.ledger_id for o in loaded],
                "rows_loaded": report.total("rows_loaded"),
            },
        )
        emitted += 1
    return emitted


def markdown_text(value: object, limit: int = MAX_ARTIFACT_TEXT) -> str:
    """Untrusted text (file names, errors quoting file contents) as inert Markdown: control
    characters shown as code points, every character Markdown or HTML could act on escaped."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    text = _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return _MARKDOWN.sub(r"\\\1", text)


def run_markdown(report: IngestReport) -> str:
    summary = report.summary()
    lines = [
        f"# Ingest run {markdown_text(report.run_id)}",
        "",
        f"{summary['files']} files · {summary['rows_loaded']} readings loaded · "
        f"{summary['rows_duplicate']} duplicates · {summary['rows_quarantined']} quarantined · "
        f"{summary['rows_conflict']} conflicts · "
        f"{summary['equipment']} equipment with new data · "
        f"parse {summary['parse_s']} s, validate {summary['validate_s']} s, "
        f"load {summary['load_s']} s",
        "",
        "| file | status | rows | loaded | duplicates | quarantined | conflicts | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for o in report.files[:MAX_ARTIFACT_ROWS]:
        note = "; ".join([o.error or "", *o.warnings]).strip("; ")
        lines.append(
            f"| {markdown_text(o.file)} | {o.status} | {o.rows_total} | {o.rows_loaded} "
            f"| {o.rows_duplicate} | {o.rows_quarantined} | {o.rows_conflict} "
            f"| {markdown_text(note)} |"
        )
    if len(report.files) > MAX_ARTIFACT_ROWS:
        lines.append(f"\n… and {len(report.files) - MAX_ARTIFACT_ROWS} more files")
    return "\n".join(lines) + "\n"


@task(name="apply-reading-corrections", cache_policy=NONE)
def apply_reading_corrections() -> dict:
    """Readings an admin corrected (an accepted conflict): rebuild the features of the window each
    feeds with dbt and rescore that window with the champion; earlier predictions keep a note."""
    settings = get_settings()
    forward = prefect_log_forwarder()

    def score(features):
        # Imported here, not at the top: scikit-learn and MLflow take seconds to load, and every
        # ingest run is a process of its own that only rarely has a correction to rescore.
        from emps.ml import predict
        from emps.ml.dataset import with_admin_thresholds

        champion = predict.load_champion(settings)
        scored = predict.score_frame(
            champion.model, champion.version, features, with_admin_thresholds(settings)
        )
        return predict.write_predictions(scored, settings)

    report = corrections.apply_corrections(
        settings,
        build=lambda: transform.build_after_ingest(settings, on_log=forward),
        score=score,
    )
    if report.applied:
        get_run_logger().info(
            "corrections %s applied: %d predictions rescored%s",
            report.applied,
            report.rescored,
            f" ({report.note})" if report.note else "",
        )
    return {"applied": report.applied, "rescored": report.rescored, "note": report.note}


@flow(name="ingest-sensor-drops")
def ingest_sensor_drops(
    paths: list[str] | None = None, limit: int | None = None, build: bool = True
) -> dict:
    """Ingest device drop files from the landing zone (or the given files/folders): validate
    each reading with the Great Expectations suite, load good ones exactly once into
    raw.sensor_readings, quarantine bad rows and unreadable files with reasons, keep re-sent
    readings with other values as conflicts, archive, and emit `emps.ingest.loaded` with the
    equipment that got new data. Then (unless `build` is off) build the new readings' features
    and score them: the build-features flow, with score-equipment inside it, runs here as a
    subflow, so a reading reaches its prediction without waiting for another trigger, worker
    poll and process start; readings an admin corrected get their window rebuilt and rescored.
    Files dropped while it works, or within EMPS_INGEST_LINGER_S after incoming/ empties, are
    ingested by this run too, for up to EMPS_INGEST_LOOP_MAX_S; while it runs it says so
    (`emps.ingest.alive`), so neither the landing watcher nor the safety-net trigger starts a
    run that would only be cancelled. Below EMPS_INGEST_MIN_FREE_MB of free disk it claims
    nothing and ends: the drop files wait in incoming/ for a run after space returns."""
    settings = get_settings()
    names = stage_files(paths) if paths else None
    began = time.monotonic()
    deadline = began + settings.ingest.loop_max_s
    report: IngestReport | None = None
    builds: list[dict] = []
    run_id = str(runtime.flow_run.id) if runtime.flow_run.id else None
    landing = Landing(settings.landing_dir).ensure()
    arrivals = watch_arrivals(settings)
    timed_out = False
    try:
        with Heartbeat(landing, run_id, settings.ingest.heartbeat_s, announce_alive(run_id)):
            while True:
                batch = ingest_drop_files(names, limit)
                if batch.files:  # a look that found only files still settling tells nothing
                    publish_run_table(batch)
                    emit_ingest_events(batch)
                report = batch if report is None else report.merged_with(batch)
                if build and any(o.rows_loaded > 0 for o in batch.files):
                    builds.append(build_loaded_features())
                if build and corrections.pending_corrections(settings):
                    apply_reading_corrections()
                if batch.paused:
                    # Looking again every second for the rest of the loop would only fill
                    # Prefect's database (on the full disk): the next scheduled run looks again.
                    get_run_logger().warning(
                        "ingest paused: %s; the drop files wait in incoming/ (nothing lost) and "
                        "the next run looks again",
                        batch.paused,
                    )
                    break
                # Files that arrived while this run worked are ingested now, not by a later
                # run: this run says it is alive, so nobody starts another. Then the run
                # lingers for the next drops, its imports, GX suite, dbt and model loaded.
                if names is not None:
                    break
                release_freed_memory()
                if not batch.files:  # nothing claimable although files waited: let them settle
                    arrivals.wait(settings.ingest.watch_poll_s)
                    arrivals.poll()
                if not wait_for_files(settings, deadline, arrivals):
                    timed_out = time.monotonic() >= deadline
                    break
    finally:
        stop_watching_arrivals(settings)
    if timed_out and files_waiting(settings):
        hand_over(settings)
    summary = report.summary()
    get_run_logger().info("ingest run: %s", json.dumps(summary))
    if report.disk_filled:
        # A failed run raises the `ingest_run_failed` operations alert: the floor did not catch
        # this (set too low, or the database's disk is not one `disk_low` can measure).
        raise RuntimeError(
            f"ingest stopped: {report.paused}. Nothing is lost: the files wait and load once "
            "space is freed"
        )
    return {
        **summary,
        "equipment_ids": sorted(report.equipment_ids),
        "ingest_file_ids": [o.ledger_id for o in report.files if o.rows_loaded > 0],
        "features": features_summary(builds) if build else None,
    }


def announce_alive(run_id: str | None):
    """What the heartbeat calls every EMPS_INGEST_HEARTBEAT_S: `emps.ingest.alive`, which keeps
    the deployment's safety-net trigger (prefect.yaml) from starting another run."""

    def announce() -> None:
        emit_event(
            event=ALIVE_EVENT,
            resource={
                "prefect.resource.id": RESOURCE_ID,
                "prefect.resource.name": "landing/incoming",
            },
            payload={"flow_run_id": run_id},
        )

    return announce


def hand_over(settings: Settings) -> None:
    """This run reached EMPS_INGEST_LOOP_MAX_S with files still waiting: schedule the next run a
    few seconds ahead, when this one has ended (one started now would be cancelled)."""
    if not runtime.deployment.id:
        return
    from prefect.deployments import run_deployment

    name = f"{runtime.flow_run.flow_name}/{runtime.deployment.name}"
    parameters = {k: v for k, v in (runtime.flow_run.parameters or {}).items() if k != "paths"}
    run_deployment(
        name,
        parameters=parameters,
        scheduled_time=datetime.now(UTC) + timedelta(seconds=HANDOVER_DELAY_S),
        timeout=0,
        as_subflow=False,
    )
    get_run_logger().info("handed over to the next run of %s (files still waiting)", name)


def release_freed_memory() -> None:
    """Give the heap a batch freed back to the system before lingering: glibc keeps freed pages
    resident (fragments of the batch's frames, dbt's results) for the rest of the run. Under a
    millisecond; no gc.collect() first, which costs ~0.3 s per batch in this process."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def wait_for_files(settings: Settings, deadline: float, arrivals: ArrivalLog | None = None) -> bool:
    """Whether a drop file waits in incoming/ now or arrives within EMPS_INGEST_LINGER_S
    (and before `deadline`, monotonic seconds): woken by the kernel's arrival events, looking
    at least every EMPS_INGEST_WATCH_POLL_S."""
    until = min(deadline, time.monotonic() + settings.ingest.linger_s)
    while time.monotonic() < deadline:
        if files_waiting(settings):
            return True
        if time.monotonic() >= until:
            return False
        timeout = min(settings.ingest.watch_poll_s, max(until - time.monotonic(), 0.0))
        if arrivals is not None and arrivals.active:
            arrivals.wait(timeout)
            arrivals.poll()
        else:
            time.sleep(timeout)
    return False


def build_loaded_features() -> dict:
    """The build-features subflow over what was just loaded. Its failure fails its own run, not
    this one: the readings are loaded, and the next build covers them."""
    state = build_features(return_state=True)
    if state.is_completed():
        return state.result()
    get_run_logger().error(
        "feature build failed (readings loaded; the next build includes them): %s",
        state.message,
    )
    return {"build_failed": state.message or state.name}


def features_summary(builds: list[dict]) -> dict:
    """What this run's feature builds did: builds, equipment scored, the last failures."""

    def last(key: str) -> str | None:
        return next((b[key] for b in reversed(builds) if b.get(key)), None)

    return {
        "builds": len(builds),
        "scored": sum(b.get("scored", 0) for b in builds),
        "build_failed": last("build_failed"),
        "scoring_failed": last("scoring_failed"),
    }


if __name__ == "__main__":
    ingest_sensor_drops()
