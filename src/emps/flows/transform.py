"""The `build-features` flow: `dbt build` what new readings change and score it. Each ingest run
that loaded readings runs it as a subflow; its deployment is for runs by hand (a selection, a full
refresh)."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from emps import transform
from emps.flows.run_log import prefect_log_forwarder
from emps.settings import get_settings


@task(name="dbt-build", cache_policy=NONE, retries=1, retry_delay_seconds=10)
def dbt_build(select: list[str] | None, full_refresh: bool) -> transform.DbtRunSummary:
    """Run `dbt build` (models, then their tests) with dbt's log in this task's log: the given
    selection, or what new readings change. Raises when a model or a test fails, which fails
    the task and the flow run."""
    forward = prefect_log_forwarder()
    if select is None and not full_refresh:
        return transform.build_after_ingest(get_settings(), on_log=forward)
    return transform.build(
        select=select, full_refresh=full_refresh, settings=get_settings(), on_log=forward
    )


@task(name="emit-features-built", cache_policy=NONE)
def emit_features_built(summary: transform.DbtRunSummary) -> None:
    """`emps.features.built`: the feature table is current; scoring can follow."""
    emit_event(
        event="emps.features.built",
        resource={"prefect.resource.id": "emps.dbt.fct_equipment_features"},
        payload={
            "seconds": round(summary.seconds, 2),
            "models": [n.name for n in summary.nodes if n.resource_type == "model"],
        },
    )


@task(name="mark-ingest-ledger", cache_policy=NONE)
def mark_ledger() -> transform.LedgerMark:
    return transform.ledger_mark(get_settings())


@task(name="check-new-readings", cache_policy=NONE)
def new_readings_since(mark: transform.LedgerMark) -> bool:
    return transform.loaded_since(mark, get_settings())


@flow(name="build-features")
def build_features(select: list[str] | None = None, full_refresh: bool = False) -> dict:
    """After new readings (the default; each ingest run that loaded readings runs this as its
    subflow): `dbt build` of the `after_ingest` selector (the incremental feature table and its
    inputs, with their tests; everything on a first run), emit `emps.features.built`, and score
    what changed (the score-equipment flow, run here as a subflow, not in another process);
    again while readings loaded elsewhere during the build (`emps ingest`, another run), for up
    to EMPS_INGEST_LOOP_MAX_S. Builds take turns (emps.transform.build_lock).
    With a selection or a full refresh: that build only. A failing model or test fails the run;
    a failed scoring run does not (the features are built), and its message is returned."""
    if select is not None or full_refresh:
        summary = dbt_build(select, full_refresh)
        emit_features_built(summary)
        return _report(summary)
    settings = get_settings()
    began, rounds, scored, scoring_failed = time.monotonic(), 0, 0, None
    while True:
        mark = mark_ledger()
        summary = dbt_build(None, False)
        emit_features_built(summary)
        # The features are built whatever scoring makes of them (no champion yet, say): its
        # failure is its own run's, and this one goes on building.
        scoring = _score_equipment()(return_state=True)
        if scoring.is_completed():
            scored += scoring.result()["scored"]
        else:
            scoring_failed = scoring.message or scoring.name
            get_run_logger().error("scoring failed, features built: %s", scoring_failed)
        rounds += 1
        if time.monotonic() - began >= settings.ingest.loop_max_s or not new_readings_since(mark):
            break
    return {
        **_report(summary),
        "rounds": rounds,
        "scored": scored,
        "scoring_failed": scoring_failed,
    }


def _score_equipment():
    # Imported here, not at the top: scoring loads scikit-learn and MLflow, and every run of a
    # selected build or a full refresh (a process of its own) would pay for it without scoring.
    from emps.flows.score import score_equipment

    return score_equipment


def _report(summary: transform.DbtRunSummary) -> dict:
    get_run_logger().info("dbt build: %s nodes in %.1f s", len(summary.nodes), summary.seconds)
    return {
        "seconds": round(summary.seconds, 2),
        "nodes": len(summary.nodes),
        "models": [n.name for n in summary.nodes if n.resource_type == "model"],
    }


if __name__ == "__main__":
    build_features()
