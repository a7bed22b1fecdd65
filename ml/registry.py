"""The MLflow registry side: where it is, versions and aliases, the promotion gate, and the
promotion history in ops.model_promotions (MLflow keeps no alias history, so we do).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emps.db import Role, connect
from emps.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
LOWER_IS_BETTER = {"brier", "fpr", "rul_mae_days"}


def tracking_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    return f"sqlite:///{(settings.home / 'mlflow' / 'mlflow.db').resolve()}"


def artifact_root(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return (settings.mlflow_artifact_root or settings.home / "mlflow" / "artifacts").resolve()


def client(settings: Settings | None = None):
    """An MlflowClient on the configured store; fails fast instead of retrying for minutes."""
    settings = settings or get_settings()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The scorer must fall back to its cached champion quickly when a remote registry is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(settings)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(settings: Settings | None = None) -> str:
    """The experiment id, creating it with its artifacts under the configured root."""
    settings = settings or get_settings()
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    root = artifact_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    return mlflow_client.create_experiment(
        settings.mlflow_experiment, artifact_location=root.as_uri()
    )


def alias_version(alias: str, settings: Settings | None = None) -> str | None:
    """The version an alias points to, None when unset. Raises if the registry is unreachable."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    try:
        return str(client(settings).get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def load_version(version: str, settings: Settings | None = None):
    """The FailureModel of a registered version."""
    import mlflow.sklearn

    settings = settings or get_settings()
    client(settings)
    return mlflow.sklearn.load_model(f"models:/{settings.model_name}/{version}")


def version_metrics(version: str, settings: Settings | None = None) -> dict[str, float]:
    """The evaluation metrics recorded with a version (tags `metric.<name>`)."""
    settings = settings or get_settings()
    details = client(settings).get_model_version(settings.model_name, version)
    return {
        key.removeprefix("metric."): float(value)
        for key, value in details.tags.items()
        if key.startswith("metric.")
    }


def list_versions(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every registered version, newest first, with its aliases and headline metrics."""
    settings = settings or get_settings()
    mlflow_client = client(settings)
    try:
        registered = mlflow_client.get_registered_model(settings.model_name)
    except Exception:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = mlflow_client.search_model_versions(f"name='{settings.model_name}'")
    rows = []
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        rows.append(
            {
                "version": str(version.version),
                "aliases": sorted(aliases.get(str(version.version), [])),
                "created": version.creation_timestamp,
                "run_id": version.run_id,
                "metrics": {
                    key.removeprefix("metric."): float(value)
                    for key, value in version.tags.items()
                    if key.startswith("metric.")
                },
            }
        )
    return rows


def record_promotion(
    to_version: str,
    from_version: str | None,
    promoted_by: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    alias: str = CHAMPION,
    settings: Settings | None = None,
) -> None:
    settings = settings or get_settings()
    clean = {k: v for k, v in (metrics or {}).items() if not _is_nan(v)}
    with connect(Role.SCORING, settings) as conn:
        conn.execute(
            "insert into ops.model_promotions "
            "(model_name, alias, from_version, to_version, promoted_by, reason, metrics) "
            "values (%s, %s, %s, %s, %s, %s, %s::jsonb)",
            (
                settings.model_name,
                alias,
                from_version,
                to_version,
                promoted_by,
                reason,
                json.dumps(clean),
            ),
        )


def last_recorded_champion(settings: Settings | None = None) -> str | None:
    """The champion version ops.model_promotions knows about (to detect moves made in the UI)."""
    settings = settings or get_settings()
    with connect(Role.SCORING, settings) as conn:
        row = conn.execute(
            "select to_version from ops.model_promotions where model_name = %s and alias = %s "
            "order by promoted_at desc, id desc limit 1",
            (settings.model_name, CHAMPION),
        ).fetchone()
    return row[0] if row else None


def note_champion_moves(current: str, settings: Settings | None = None) -> bool:
    """Record a champion change made outside EMPS (the MLflow UI); True when one was found."""
    settings = settings or get_settings()
    recorded = last_recorded_champion(settings)
    if recorded == current:
        return False
    record_promotion(
        current,
        recorded,
        "mlflow-ui",
        "champion alias moved outside EMPS (seen by the scorer)",
        _safe_metrics(current, settings),
        settings=settings,
    )
    log.warning("champion is now version %s (was %s), moved in MLflow", current, recorded)
    return True


def set_challenger(version: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client(settings).set_registered_model_alias(settings.model_name, CHALLENGER, version)


def promote(
    version: str,
    promoted_by: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> str | None:
    """Point `champion` at `version` and record it; returns the previous champion."""
    settings = settings or get_settings()
    mlflow_client = client(settings)
    previous = alias_version(CHAMPION, settings)
    mlflow_client.set_registered_model_alias(settings.model_name, CHAMPION, version)
    if alias_version(CHALLENGER, settings) == version:
        mlflow_client.delete_registered_model_alias(settings.model_name, CHALLENGER)
    record_promotion(
        version,
        previous,
        promoted_by,
        reason,
        metrics or _safe_metrics(version, settings),
        settings=settings,
    )
    return previous


@dataclass
class GateDecision:
    challenger: str
    champion: str | None
    promoted: bool
    reason: str
    metric: str
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    champion_metrics: dict[str, float] = field(default_factory=dict)


def beats(challenger: float, champion: float, metric: str, margin: float) -> bool:
    """Strictly better than the champion by more than `margin` in the metric's direction."""
    if _is_nan(challenger):
        return False
    if _is_nan(champion):
        return True
    if metric in LOWER_IS_BETTER:
        return challenger < champion - margin
    return challenger > champion + margin


def run_gate(
    challenger: str,
    actor: str,
    settings: Settings | None = None,
    examples=None,
    failures=None,
    force: bool = False,
) -> GateDecision:
    """Promote `challenger` to champion only if it beats the champion on the same test rows."""
    from ml.dataset import read_failure_events, read_training_examples, with_admin_thresholds
    from ml.evaluate import evaluate_model, split_examples

    settings = with_admin_thresholds(settings)
    metric = settings.ml_gate_metric
    champion = alias_version(CHAMPION, settings)
    if champion == challenger:
        return GateDecision(challenger, champion, False, "already the champion", metric)
    if force:
        reason = f"forced by {actor}, gate skipped"
        promote(challenger, actor, reason, settings=settings)
        return GateDecision(challenger, champion, True, reason, metric)
    if champion is None:
        reason = "first champion: no model was in production"
        promote(challenger, actor, reason, settings=settings)
        return GateDecision(challenger, None, True, reason, metric)
    examples = read_training_examples(settings) if examples is None else examples
    failures = read_failure_events(settings) if failures is None else failures
    test = split_examples(examples, settings).test
    challenger_metrics = evaluate_model(
        load_version(challenger, settings), test, failures, settings
    )
    try:
        champion_metrics = evaluate_model(
            load_version(champion, settings), test, failures, settings
        )
    except ValueError as error:
        reason = f"champion v{champion} cannot score today's features ({error}); challenger wins"
        promote(challenger, actor, reason, challenger_metrics, settings)
        return GateDecision(challenger, champion, True, reason, metric, challenger_metrics)
    new, old = challenger_metrics[metric], champion_metrics[metric]
    won = beats(new, old, metric, settings.ml_gate_min_improvement)
    direction = "lower" if metric in LOWER_IS_BETTER else "higher"
    reason = (
        f"{metric} {new:.4f} vs champion v{champion} {old:.4f} on the same "
        f"{int(challenger_metrics['test_rows'])} held-out rows ({direction} is better, "
        f"margin {settings.ml_gate_min_improvement})"
    )
    if won:
        promote(
            challenger,
            actor,
            "gate passed: " + reason,
            {"challenger": challenger_metrics, "champion": champion_metrics},
            settings,
        )
    return GateDecision(
        challenger,
        champion,
        won,
        ("gate passed: " if won else "gate refused: ") + reason,
        metric,
        challenger_metrics,
        champion_metrics,
    )


def _safe_metrics(version: str, settings: Settings) -> dict[str, float]:
    try:
        return version_metrics(version, settings)
    except Exception:
        return {}


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
