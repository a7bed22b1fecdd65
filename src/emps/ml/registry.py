"""The MLflow registry side: where it is, versions and aliases, the promotion gate, and the
promotion history in ops.model_promotions (MLflow keeps no alias history, so we do).

A model is loaded only as EMPS verified it: the SHA-256 of its whole MLflow model directory is
recorded when training registers it (ops.model_artifacts) and at each promotion
(ops.model_promotions), and every load downloads the files, hashes them and refuses a mismatch
before reading a byte as a model. The model file is read with skops and a list of trusted types
fixed here (never the list the model's own files carry); a pickled model is refused. A version
logged before the code moved into the `emps` package names the model's class by its old path
(`ml.model.FailureModel`): that one name, once the files' hash has been checked, is read as the
class's path today.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emps.db import Role, connect
from emps.ml.dataset import read_failure_events, read_training_examples, with_admin_thresholds
from emps.settings import Settings, get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
# The only types, beyond what skops trusts by default (scikit-learn's estimators, numpy), a model
# file may hold: ours and the trees of the forests. Training refuses to log anything else.
TRUSTED_TYPES = ("emps.ml.model.FailureModel", "sklearn.tree._tree.Tree")
# Types as versions logged before the move into the `emps` package name them, and their names
# now: only these are renamed, and only in files whose hash was checked (or that the gate reads
# only with the trusted types, like any other).
LEGACY_TYPES = {"ml.model.FailureModel": "emps.ml.model.FailureModel"}


class ModelIntegrityError(RuntimeError):
    """A model version's files are not what EMPS recorded, or not a model EMPS will read."""


def artifact_digest(directory: Path) -> str:
    """SHA-256 over every file of a model directory: names, then contents (order fixed)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def tracking_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.ml.mlflow_tracking_uri:
        return settings.ml.mlflow_tracking_uri
    return f"sqlite:///{(settings.home / 'mlflow' / 'mlflow.db').resolve()}"


def artifact_root(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return (settings.ml.mlflow_artifact_root or settings.home / "mlflow" / "artifacts").resolve()


def client(settings: Settings | None = None):
    """An MlflowClient on the configured store; fails fast instead of retrying for minutes."""
    settings = settings or get_settings()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # The scorer must fall back to its cached champion quickly when a remote registry is down.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # Every load downloads the version's files (to check them): no progress bar on the console.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
    experiment = mlflow_client.get_experiment_by_name(settings.ml.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    root = artifact_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    return mlflow_client.create_experiment(
        settings.ml.mlflow_experiment, artifact_location=root.as_uri()
    )


def alias_version(alias: str, settings: Settings | None = None) -> str | None:
    """The version an alias points to, None when unset. Raises if the registry is unreachable."""
    from mlflow.exceptions import MlflowException

    settings = settings or get_settings()
    try:
        return str(
            client(settings).get_model_version_by_alias(settings.ml.model_name, alias).version
        )
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _download(version: str, settings: Settings, into: Path) -> Path:
    import mlflow.artifacts

    client(settings)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{settings.ml.model_name}/{version}", dst_path=str(into)
        )
    )


def _read_model(directory: Path, version: str):
    """The model in a downloaded version: skops only, only the trusted types."""
    import skops.io
    from mlflow.models import Model

    flavor = Model.load(str(directory)).flavors.get("sklearn") or {}
    fmt = flavor.get("serialization_format")
    if fmt != "skops":
        raise ModelIntegrityError(
            f"model version {version} is stored as {fmt or 'an unknown format'!r}; EMPS loads "
            "only skops models (a pickle runs code when read)"
        )
    name = str(flavor.get("pickled_model") or "")
    path = directory / name
    if not name or Path(name).name != name or not path.is_file():
        raise ModelIntegrityError(f"model version {version} names no model file of its own")
    data = with_current_type_names(path.read_bytes())
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelIntegrityError(
            f"model version {version} holds types EMPS does not load: {', '.join(untrusted)}"
        )
    return skops.io.loads(data, trusted=list(TRUSTED_TYPES))


def with_current_type_names(data: bytes) -> bytes:
    """A skops file with the types of LEGACY_TYPES named as they are now; any other file as it
    is. Only the schema's type names change: every other member is copied byte for byte."""
    with zipfile.ZipFile(io.BytesIO(data)) as source:
        schema = json.loads(source.read("schema.json"))
        if not _rename_legacy_types(schema):
            return data
        renamed = io.BytesIO()
        with zipfile.ZipFile(renamed, "w") as target:
            for member in source.infolist():
                if member.filename == "schema.json":
                    target.writestr(member, json.dumps(schema))
                else:
                    target.writestr(member, source.read(member))
    return renamed.getvalue()


def _rename_legacy_types(node: Any) -> bool:
    """Rename, in place, every `__module__`/`__class__` pair of the schema naming a legacy type;
    whether any was."""
    renamed = False
    if isinstance(node, dict):
        new = LEGACY_TYPES.get(f"{node.get('__module__')}.{node.get('__class__')}")
        if new is not None:
            node["__module__"], _, node["__class__"] = new.rpartition(".")
            renamed = True
        for value in node.values():
            renamed |= _rename_legacy_types(value)
    elif isinstance(node, list):
        for value in node:
            renamed |= _rename_legacy_types(value)
    return renamed


def load_version(version: str, settings: Settings | None = None, expected: str | None = None):
    """The FailureModel of a registered version, with the SHA-256 of its files: (model, digest).

    With `expected`, files hashing to anything else raise ModelIntegrityError before being read.
    Without it (the promotion gate reading a version EMPS did not register) they are still read
    only as skops with the trusted types."""
    settings = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="emps-model-") as tmp:
        directory = _download(version, settings, Path(tmp))
        digest = artifact_digest(directory)
        if expected is not None and digest != expected:
            raise ModelIntegrityError(
                f"model version {version}'s files changed since EMPS recorded them (SHA-256 "
                f"{digest[:12]}..., recorded {expected[:12]}...): not loaded"
            )
        return _read_model(directory, version), digest


def version_digest(version: str, settings: Settings | None = None) -> str:
    """The SHA-256 of a version's files as they are now (nothing is read as a model)."""
    settings = settings or get_settings()
    with tempfile.TemporaryDirectory(prefix="emps-model-") as tmp:
        return artifact_digest(_download(version, settings, Path(tmp)))


def recorded_digest(version: str, settings: Settings | None = None) -> str | None:
    """What EMPS recorded for a version: at its latest promotion, else at its registration."""
    settings = settings or get_settings()
    with connect(Role.READER, settings) as conn:
        row = conn.execute(
            "select coalesce("
            " (select artifact_sha256 from ops.model_promotions where model_name = %(m)s"
            "  and to_version = %(v)s and artifact_sha256 is not null order by id desc limit 1),"
            " (select artifact_sha256 from ops.model_artifacts"
            "  where model_name = %(m)s and version = %(v)s))",
            {"m": settings.ml.model_name, "v": version},
        ).fetchone()
    return row[0] if row else None


def record_registration(
    version: str, digest: str, recorded_by: str, settings: Settings | None = None
) -> None:
    """Training's note of what it logged, so later loads can check it."""
    settings = settings or get_settings()
    with connect(Role.SCORING, settings) as conn:
        conn.execute(
            "insert into ops.model_artifacts (model_name, version, artifact_sha256, recorded_by) "
            "values (%s, %s, %s, %s) on conflict do nothing",
            (settings.ml.model_name, version, digest, recorded_by),
        )


def verified_champions(settings: Settings | None = None) -> list[tuple[str, str]]:
    """(version, digest) of the champions EMPS recorded, newest first, each version once."""
    settings = settings or get_settings()
    with connect(Role.READER, settings) as conn:
        rows = conn.execute(
            "select to_version, artifact_sha256 from ("
            " select distinct on (to_version) to_version, artifact_sha256, id"
            " from ops.model_promotions where model_name = %s and alias = %s"
            " and artifact_sha256 is not null order by to_version, id desc) latest "
            "order by id desc",
            (settings.ml.model_name, CHAMPION),
        ).fetchall()
    return [(version, digest) for version, digest in rows]


def adopt_unrecorded_champions(settings: Settings | None = None) -> list[str]:
    """Record the hashes of champions promoted before EMPS recorded any (an upgrade), as their
    files are now; returns the versions adopted. Only promotions older than the migration that
    added the hashes count: a version made champion since, in the MLflow UI, stays unverified
    until someone promotes it with `emps model promote`."""
    settings = settings or get_settings()
    with connect(Role.OWNER, settings) as conn:
        versions = [
            row[0]
            for row in conn.execute(
                "select distinct p.to_version from ops.model_promotions p "
                "where p.model_name = %s and p.alias = %s and p.promoted_at < "
                " (select applied_at from public.schema_migrations where version = 102) "
                "and not exists (select 1 from ops.model_promotions q where q.model_name = "
                " p.model_name and q.to_version = p.to_version and q.artifact_sha256 is not null) "
                "and not exists (select 1 from ops.model_artifacts a where a.model_name = "
                " p.model_name and a.version = p.to_version)",
                (settings.ml.model_name, CHAMPION),
            )
        ]
    adopted = []
    for version in versions:
        try:
            digest = version_digest(version, settings)
        except Exception as error:  # a version deleted from MLflow: nothing to adopt
            log.warning("champion v%s not adopted: %s", version, error)
            continue
        with connect(Role.OWNER, settings) as conn:
            conn.execute(
                "insert into ops.model_artifacts (model_name, version, artifact_sha256, "
                "recorded_by) values (%s, %s, %s, 'emps up: adopted at upgrade') "
                "on conflict do nothing",
                (settings.ml.model_name, version, digest),
            )
        adopted.append(version)
    return adopted


def version_metrics(version: str, settings: Settings | None = None) -> dict[str, float]:
    """The evaluation metrics recorded with a version (tags `metric.<name>`)."""
    settings = settings or get_settings()
    details = client(settings).get_model_version(settings.ml.model_name, version)
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
        registered = mlflow_client.get_registered_model(settings.ml.model_name)
    except Exception:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = mlflow_client.search_model_versions(f"name='{settings.ml.model_name}'")
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
    artifact_sha256: str | None = None,
) -> None:
    settings = settings or get_settings()
    clean = {k: v for k, v in (metrics or {}).items() if not _is_nan(v)}
    with connect(Role.SCORING, settings) as conn:
        conn.execute(
            "insert into ops.model_promotions (model_name, alias, from_version, to_version, "
            "promoted_by, reason, metrics, artifact_sha256) "
            "values (%s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
            (
                settings.ml.model_name,
                alias,
                from_version,
                to_version,
                promoted_by,
                reason,
                json.dumps(clean),
                artifact_sha256,
            ),
        )


def last_recorded_champion(settings: Settings | None = None) -> str | None:
    """The champion version ops.model_promotions knows about (to detect moves made in the UI)."""
    settings = settings or get_settings()
    with connect(Role.SCORING, settings) as conn:
        row = conn.execute(
            "select to_version from ops.model_promotions where model_name = %s and alias = %s "
            "order by promoted_at desc, id desc limit 1",
            (settings.ml.model_name, CHAMPION),
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
        # What EMPS recorded at registration, if anything: a move vouches for no files.
        artifact_sha256=recorded_digest(current, settings),
    )
    log.warning("champion is now version %s (was %s), moved in MLflow", current, recorded)
    return True


def set_challenger(version: str, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client(settings).set_registered_model_alias(settings.ml.model_name, CHALLENGER, version)


def promote(
    version: str,
    promoted_by: str,
    reason: str,
    metrics: dict[str, Any] | None = None,
    settings: Settings | None = None,
    artifact_sha256: str | None = None,
) -> str | None:
    """Point `champion` at `version` and record it, with the SHA-256 of the files that were
    evaluated (`artifact_sha256`; else of the files as they are now); returns the previous
    champion."""
    settings = settings or get_settings()
    if artifact_sha256 is None:
        artifact_sha256 = recorded_digest(version, settings) or version_digest(version, settings)
    mlflow_client = client(settings)
    previous = alias_version(CHAMPION, settings)
    mlflow_client.set_registered_model_alias(settings.ml.model_name, CHAMPION, version)
    if alias_version(CHALLENGER, settings) == version:
        mlflow_client.delete_registered_model_alias(settings.ml.model_name, CHALLENGER)
    record_promotion(
        version,
        previous,
        promoted_by,
        reason,
        metrics or _safe_metrics(version, settings),
        settings=settings,
        artifact_sha256=artifact_sha256,
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
    comparison: dict[str, Any] = field(default_factory=dict)


def run_gate(
    challenger: str,
    actor: str,
    settings: Settings | None = None,
    examples=None,
    failures=None,
    force: bool = False,
) -> GateDecision:
    """Promote `challenger` to champion only if it beats the champion beyond noise on the gate
    slice: held-out equipment neither was trained on, compared pairwise (both models on the same
    resamples of that equipment), the 95 % interval of the improvement above the configured
    margin, with at least EMPS_ML_GATE_MIN_FAILURES failures there. The figures versions report
    come from the report slice, which no gate sees (emps.ml.evaluate)."""
    # The gate's statistics (scikit-learn's metrics) load where a gate runs, not where a
    # model scores.
    from emps.ml.evaluate import paired_comparison, split_examples

    settings = with_admin_thresholds(settings)
    metric = settings.ml.gate_metric
    champion = alias_version(CHAMPION, settings)
    if champion == challenger and recorded_digest(challenger, settings) is not None:
        return GateDecision(challenger, champion, False, "already the champion", metric)
    if champion == challenger:
        # Made champion outside EMPS (the MLflow UI) from a version EMPS never registered: the
        # scorer refuses it until someone vouches for it here. Read it (skops, trusted types)
        # before recording its files.
        _, digest = load_version(challenger, settings)
        reason = f"vouched for by {actor}: champion set outside EMPS, its files now recorded"
        promote(challenger, actor, reason, settings=settings, artifact_sha256=digest)
        return GateDecision(challenger, champion, True, reason, metric)
    if force:
        reason = f"forced by {actor}, gate skipped"
        promote(challenger, actor, reason, settings=settings)
        return GateDecision(challenger, champion, True, reason, metric)
    if champion is None:
        reason = "first champion: no model was in production"
        promote(challenger, actor, reason, settings=settings)
        return GateDecision(challenger, None, True, reason, metric)
    reported = {
        "challenger_metrics": _safe_metrics(challenger, settings),
        "champion_metrics": _safe_metrics(champion, settings),
    }
    examples = read_training_examples(settings) if examples is None else examples
    failures = read_failure_events(settings) if failures is None else failures
    rows = split_examples(examples, settings).gate.period
    # The challenger's files as evaluated are the ones recorded if it wins.
    new_model, evaluated = load_version(challenger, settings, recorded_digest(challenger, settings))
    try:
        old_model, _ = load_version(champion, settings, recorded_digest(champion, settings))
        old = old_model.predict(rows)
    except (ValueError, ModelIntegrityError) as error:
        reason = f"champion v{champion} cannot score today's features ({error}); challenger wins"
        promote(challenger, actor, reason, reported, settings, evaluated)
        return GateDecision(challenger, champion, True, reason, metric, **reported)
    comparison = paired_comparison(rows, new_model.predict(rows), old, metric)
    facts = {k: v for k, v in asdict(comparison).items() if not _is_nan(v)}
    where = (
        f"on the gate slice ({comparison.equipment} held-out equipment, "
        f"{comparison.failures} failures)"
    )
    if comparison.failures < settings.ml.gate_min_failures:
        reason = (
            f"gate refused: the gate slice holds {comparison.failures} held-out failures, fewer "
            f"than the {settings.ml.gate_min_failures} a comparison needs "
            "(EMPS_ML_GATE_MIN_FAILURES); champion "
            f"v{champion} stays (`emps model promote --force` overrides)"
        )
        return GateDecision(
            challenger, champion, False, reason, metric, **reported, comparison=facts
        )
    margin = settings.ml.gate_min_improvement
    won = not _is_nan(comparison.low) and comparison.low > margin
    verdict = (
        f"better beyond noise (lower bound above {margin:g})"
        if won
        else "not better beyond noise"
        if comparison.improvement > 0
        else "not better"
    )
    reason = (
        f"{metric} {comparison.challenger:.4f} vs champion v{champion} "
        f"{comparison.champion:.4f} {where}: improvement {comparison.improvement:+.4f}, 95 % "
        f"interval {comparison.low:+.4f} to {comparison.high:+.4f}, {verdict}"
    )
    reason = ("gate passed: " if won else "gate refused: ") + reason
    if won:
        promote(challenger, actor, reason, {**reported, "comparison": facts}, settings, evaluated)
    return GateDecision(challenger, champion, won, reason, metric, **reported, comparison=facts)


def _safe_metrics(version: str, settings: Settings) -> dict[str, float]:
    try:
        return version_metrics(version, settings)
    except Exception:
        return {}


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
