"""The `ingest-sensor-drops` flow: load what devices dropped in the landing zone, every minute and
whenever the landing watcher announces new files."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE
from prefect.events import emit_event

from emps.ingest.pipeline import (
    FileOutcome,
    IngestReport,
    files_waiting,
    ingest_landing,
    stage_into_incoming,
)
from emps.settings import get_settings

# Beyond this many ids the loaded event carries only the count; consumers then read
# raw.sensor_readings by ingest_file_id.
MAX_IDS_IN_EVENT = 5000
MAX_ARTIFACT_ROWS = 200


@task(name="stage-files", cache_policy=NONE)
def stage_files(paths: list[str]) -> list[str]:
    """Copy the given files or folders into landing/incoming so this run ingests them."""
    return stage_into_incoming([Path(p) for p in paths], get_settings())


@task(name="ingest-drop-files", cache_policy=NONE, retries=2, retry_delay_seconds=10)
def ingest_drop_files(names: list[str] | None, limit: int | None) -> IngestReport:
    """Claim, parse, validate and load waiting drop files in batches; archive or quarantine each."""
    logger = get_run_logger()

    def log_file(outcome: FileOutcome) -> None:
        logger.info(json.dumps(outcome.log_record(), ensure_ascii=False))

    return ingest_landing(
        get_settings(),
        names=names,
        limit=limit,
        on_file=log_file,
        flow_run_id=str(runtime.flow_run.id) if runtime.flow_run.id else None,
    )


@task(name="publish-run-table", cache_policy=NONE)
def publish_run_table(report: IngestReport) -> None:
    """A markdown artifact: one row per file with its counts, so the UI shows what happened."""
    create_markdown_artifact(
        key="ingest-run", markdown=run_markdown(report), description="Files of this ingest run"
    )


@task(name="emit-ingest-events", cache_policy=NONE)
def emit_ingest_events(report: IngestReport) -> int:
    """`emps.ingest.file-quarantined` per quarantined file, then one `emps.ingest.loaded`."""
    emitted = 0
    for outcome in report.files:
        if outcome.status != "quarantined":
            continue
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


def run_markdown(report: IngestReport) -> str:
    summary = report.summary()
    lines = [
        f"# Ingest run {report.run_id}",
        "",
        f"{summary['files']} files · {summary['rows_loaded']} readings loaded · "
        f"{summary['rows_duplicate']} duplicates · {summary['rows_quarantined']} quarantined · "
        f"{summary['equipment']} equipment with new data · "
        f"parse {summary['parse_s']} s, validate {summary['validate_s']} s, "
        f"load {summary['load_s']} s",
        "",
        "| file | status | rows | loaded | duplicates | quarantined | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for o in report.files[:MAX_ARTIFACT_ROWS]:
        note = (o.error or "").replace("|", "\\|")
        name = o.file.replace("|", "\\|")
        lines.append(
            f"| {name} | {o.status} | {o.rows_total} | {o.rows_loaded} | {o.rows_duplicate} "
            f"| {o.rows_quarantined} | {note} |"
        )
    if len(report.files) > MAX_ARTIFACT_ROWS:
        lines.append(f"\n… and {len(report.files) - MAX_ARTIFACT_ROWS} more files")
    return "\n".join(lines) + "\n"


@flow(name="ingest-sensor-drops")
def ingest_sensor_drops(paths: list[str] | None = None, limit: int | None = None) -> dict:
    """Ingest device drop files from the landing zone (or the given files/folders): validate
    each reading with the Great Expectations suite, load good ones exactly once into
    raw.sensor_readings, quarantine bad rows and unreadable files with reasons, archive, and
    emit `emps.ingest.loaded` with the equipment that got new data."""
    settings = get_settings()
    names = stage_files(paths) if paths else None
    report = ingest_drop_files(names, limit)
    publish_run_table(report)
    emit_ingest_events(report)
    # Files that arrived while this run worked are ingested now, not by a later run: a run the
    # file's own event started would have been cancelled, the deployment running one at a time.
    began, batch = time.monotonic(), report
    while (
        names is None
        and batch.files
        and time.monotonic() - began < settings.ingest_loop_max_s
        and files_waiting(settings)
    ):
        batch = ingest_drop_files(None, limit)
        publish_run_table(batch)
        emit_ingest_events(batch)
        report = report.merged_with(batch)
    summary = report.summary()
    get_run_logger().info("ingest run: %s", json.dumps(summary))
    return {
        **summary,
        "equipment_ids": sorted(report.equipment_ids),
        "ingest_file_ids": [o.ledger_id for o in report.files if o.rows_loaded > 0],
    }


if __name__ == "__main__":
    ingest_sensor_drops()
