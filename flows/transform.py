"""The `build-features` flow: after each ingest batch, `dbt build` what the new readings change."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.events import emit_event

from emps import transform
from emps.settings import get_settings


def _forward_to_prefect(level: str, message: str) -> None:
    logger = get_run_logger()
    {"warn": logger.warning, "error": logger.error}.get(level, logger.info)(message)


@task(name="dbt-build", cache_policy=NONE, retries=1, retry_delay_seconds=10)
def dbt_build(select: list[str] | None, full_refresh: bool) -> transform.DbtRunSummary:
    """Run `dbt build` (models, then their tests) with dbt's log in this task's log: the given
    selection, or what new readings change. Raises when a model or a test fails, which fails
    the task and the flow run."""
    if select is None and not full_refresh:
        return transform.build_after_ingest(get_settings(), on_log=_forward_to_prefect)
    return transform.build(
        select=select,
        full_refresh=full_refresh,
        settings=get_settings(),
        on_log=_forward_to_prefect,
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


@flow(name="build-features")
def build_features(select: list[str] | None = None, full_refresh: bool = False) -> dict:
    """Run `dbt build` on the models a batch of readings changes (by default the `after_ingest`
    selector: the incremental feature table and its inputs, with their tests; everything on a
    first run), then emit `emps.features.built`. Any failing model or test fails the run."""
    summary = dbt_build(select, full_refresh)
    emit_features_built(summary)
    get_run_logger().info("dbt build: %s nodes in %.1f s", len(summary.nodes), summary.seconds)
    return {
        "seconds": round(summary.seconds, 2),
        "nodes": len(summary.nodes),
        "models": [n.name for n in summary.nodes if n.resource_type == "model"],
    }


if __name__ == "__main__":
    build_features()
