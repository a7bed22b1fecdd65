"""Scoring with the champion: load it by alias (cached per version), predict, explain, write
ops.predictions. Also the manual and "what if" predictions of one equipment.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from emps.catalog import load_catalog
from emps.db import Role, connect
from emps.domain import health_score_for, severity_for
from emps.ml import registry
from emps.ml.assess import Assessment, assess_matrix
from emps.ml.dataset import (
    read_latest_feature_row,
    read_latest_feature_rows,
    read_latest_features,
    registered_equipment,
    with_admin_thresholds,
)
from emps.ml.explain import score_and_explain
from emps.ml.model import FailureModel
from emps.settings import Settings, get_settings

log = logging.getLogger(__name__)


class NoChampion(RuntimeError):
    """No model is promoted: scoring cannot run."""


class RegistryUnavailable(RuntimeError):
    """The registry cannot be reached and this process has no champion cached."""


@dataclass
class Champion:
    version: str
    model: FailureModel
    stale: bool = False  # True: the registry was unreachable, this is the last champion we knew
    # Why the version the alias points to was not loaded: this is the last verified champion.
    refused: str | None = None
    alias_version: str = ""  # what `champion` points to; "": `version` (nothing refused)

    def __post_init__(self) -> None:
        if not self.alias_version:
            self.alias_version = self.version


# Loaded models by (registry URI, model name, version, files' SHA-256): a version's files were
# checked against what EMPS recorded, so its model is loaded once per process. The last champion
# per model name is the fallback when the registry cannot be reached.
_models: dict[tuple[str, str, str, str], FailureModel] = {}
_last_champion: dict[str, tuple[str, FailureModel]] = {}
# When each (registry URI, model name)'s alias was last read from the registry.
_alias_read_at: dict[tuple[str, str], float] = {}


def load_champion(settings: Settings | None = None, max_age_s: float = 0.0) -> Champion:
    """The model the `champion` alias points to (read from the registry every call by default,
    so a move in the UI applies to the next scoring run).

    `max_age_s` lets a caller that predicts one equipment at a time reuse the alias read up to
    that many seconds ago: the registry lookup costs more than the prediction itself.
    """
    settings = settings or get_settings()
    uri = registry.tracking_uri(settings)
    cached = _last_champion.get(settings.ml.model_name)
    read_at = _alias_read_at.get((uri, settings.ml.model_name))
    if cached and read_at is not None and time.monotonic() - read_at < max_age_s:
        return Champion(cached[0], cached[1])
    try:
        version = registry.alias_version(registry.CHAMPION, settings)
    except Exception as error:
        cached = _last_champion.get(settings.ml.model_name)
        if cached is None:
            raise RegistryUnavailable(
                f"the model registry at {uri} cannot be reached ({type(error).__name__}: "
                f"{error}) and no champion was loaded earlier in this process"
            ) from error
        log.warning(
            "model registry at %s unreachable (%s); scoring with cached champion version %s",
            uri,
            type(error).__name__,
            cached[0],
        )
        return Champion(cached[0], cached[1], stale=True)
    if version is None:
        raise NoChampion(
            f"no '{registry.CHAMPION}' alias on registered model '{settings.ml.model_name}' at {uri}: "
            "train and promote one with `emps model train`, or set the alias in the MLflow UI"
        )
    try:
        model = _verified(version, settings)
    except registry.ModelIntegrityError as refusal:
        return _last_verified(version, str(refusal), settings)
    _last_champion[settings.ml.model_name] = (version, model)
    _alias_read_at[(uri, settings.ml.model_name)] = time.monotonic()
    return Champion(version, model)


def _verified(version: str, settings: Settings) -> FailureModel:
    """A version's model, loaded only if its files hash to what EMPS recorded for it."""
    expected = registry.recorded_digest(version, settings)
    if expected is None:
        raise registry.ModelIntegrityError(
            f"champion v{version} was neither trained nor promoted through EMPS, so nothing vouches "
            f"for its files: promote it with `emps model promote --version {version}` to use it"
        )
    key = (registry.tracking_uri(settings), settings.ml.model_name, version, expected)
    if key not in _models:
        _models[key], _ = registry.load_version(version, settings, expected)
    return _models[key]


def _last_verified(refused: str, reason: str, settings: Settings) -> Champion:
    """The newest earlier champion whose files still verify, when the alias's cannot be used."""
    for version, _ in registry.verified_champions(settings):
        if version == refused:
            continue
        try:
            model = _verified(version, settings)
        except registry.ModelIntegrityError:
            continue
        log.error("%s; scoring with v%s, the last champion whose files verify", reason, version)
        return Champion(version, model, refused=reason, alias_version=refused)
    raise registry.ModelIntegrityError(f"{reason}; no earlier champion's files verify either")


def forget_cached_models() -> None:
    """Drop every cached model (tests; a long-running process never needs it)."""
    _models.clear()
    _last_champion.clear()
    _alias_read_at.clear()


@dataclass
class RowPredictions:
    """What scoring says about each row of a feature matrix."""

    probability: np.ndarray
    remaining_life: np.ndarray  # in each row's life unit, at most the cap
    beyond: np.ndarray  # True: the life is at least the cap ("more than")
    days: np.ndarray  # the remaining life in days of (derived) time
    units: list[str]
    assessments: list[Assessment]
    explanation: list[list[dict[str, Any]]]


def _predict_matrix(
    model: FailureModel, X: np.ndarray, types: Sequence[str | None], settings: Settings
) -> RowPredictions:
    """Probability, remaining life, assessment and explanation per row of the feature matrix."""
    score, explanation = score_and_explain(model, X, settings.ml.explain_top)
    probability = np.round(model.calibrate(score), 6)
    life, beyond = model.remaining_life(score, types, X)
    days = model.days_until_failure(score, types, X)
    assessments = assess_matrix(
        X,
        np.asarray(types, dtype=object),
        model.trained_features,
        load_catalog(settings.catalog_path),
        model.assessment_profile,
        model.feature_labels,
    )
    return RowPredictions(
        probability=probability,
        remaining_life=np.round(life, 2),
        beyond=beyond,
        days=np.round(days, 2),
        units=[model.clock(t)["unit"] for t in types],
        assessments=assessments,
        explanation=explanation,
    )


PREDICTION_COLUMNS = (
    "equipment_id",
    "ts",
    "failure_probability",
    "health_score",
    "severity",
    "days_until_failure",
    "remaining_life",
    "life_unit",
    "remaining_life_beyond",
    "assessment",
    "assessment_reason",
    "model_version",
    "explanation",
)


def score_frame(
    model: FailureModel, version: str, features: pd.DataFrame, settings: Settings | None = None
) -> pd.DataFrame:
    """One prediction row per feature row, in the ops.predictions shape."""
    settings = settings or get_settings()
    if features.empty:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    types = (
        features["equipment_type"].tolist()
        if "equipment_type" in features
        else [None] * len(features)
    )
    scored = _predict_matrix(model, model.matrix(features), types, settings)
    return pd.DataFrame(
        {
            "equipment_id": features["equipment_id"].to_numpy(),
            "ts": features["ts"].to_numpy(),
            "failure_probability": scored.probability,
            "health_score": [health_score_for(p) for p in scored.probability],
            "severity": [severity_for(p, settings.thresholds).value for p in scored.probability],
            "days_until_failure": scored.days,
            "remaining_life": scored.remaining_life,
            "life_unit": scored.units,
            "remaining_life_beyond": scored.beyond,
            "assessment": [a.state for a in scored.assessments],
            "assessment_reason": [a.reason for a in scored.assessments],
            "model_version": version,
            "explanation": scored.explanation,
        }
    )


def _optional(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else value


def write_predictions(predictions: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """Insert the predictions (one COPY); returns them with their ops.predictions id."""
    settings = settings or get_settings()
    if predictions.empty:
        return predictions.assign(id=pd.Series(dtype="int64"))
    columns = "id, " + ", ".join(PREDICTION_COLUMNS)
    with connect(Role.SCORING, settings) as conn:
        # Ids drawn first so the rows can go in by COPY and still be named in the events.
        ids = [
            row[0]
            for row in conn.execute(
                "select nextval('ops.predictions_id_seq') from generate_series(1, %s)",
                (len(predictions),),
            )
        ]
        with conn.cursor().copy(f"copy ops.predictions ({columns}) from stdin") as copy:  # noqa: S608
            for row_id, row in zip(ids, predictions.itertuples(index=False), strict=True):
                copy.write_row(
                    (
                        row_id,
                        row.equipment_id,
                        pd.Timestamp(row.ts).to_pydatetime(),
                        float(row.failure_probability),
                        int(row.health_score),
                        row.severity,
                        _optional(float(row.days_until_failure)),
                        _optional(float(row.remaining_life)),
                        row.life_unit,
                        bool(row.remaining_life_beyond),
                        row.assessment,
                        row.assessment_reason,
                        str(row.model_version),
                        json.dumps(row.explanation),
                    )
                )
    return predictions.assign(id=ids)


# The resource label saying whether the prediction's alert was already handled by the run that
# wrote it: the alert flow's trigger (prefect.yaml) starts only on "false".
ALERT_HANDLED_LABEL = "emps.alert-handled"


def event_for(
    row: Mapping[str, Any], handled: bool = False
) -> tuple[str, dict[str, str], dict[str, Any]] | None:
    """(event name, resource, payload) for a HIGH/CRITICAL prediction, None otherwise;
    `handled` when the writing run already raised its alert."""
    severity = row["severity"]
    if severity not in ("HIGH", "CRITICAL"):
        return None
    days = row["days_until_failure"]
    life = row.get("remaining_life")
    return (
        f"emps.prediction.{severity.lower()}",
        {
            "prefect.resource.id": f"equipment.{row['equipment_id']}",
            ALERT_HANDLED_LABEL: str(handled).lower(),
        },
        {
            "prediction_id": int(row["id"]),
            "prediction_ts": pd.Timestamp(row["ts"]).isoformat(),
            "equipment_id": row["equipment_id"],
            "failure_probability": float(row["failure_probability"]),
            "severity": severity,
            "days_until_failure": None if pd.isna(days) else float(days),
            "remaining_life": None if life is None or pd.isna(life) else float(life),
            "life_unit": row.get("life_unit"),
            "assessment": row.get("assessment"),
            "model_version": str(row["model_version"]),
        },
    )


def severity_changes(written: pd.DataFrame, settings: Settings | None = None) -> pd.DataFrame:
    """The HIGH/CRITICAL rows whose equipment's previous prediction had another severity.

    An equipment that stays CRITICAL is scored every minute; one event per change keeps the
    alert flow (a process per event) from being started for nothing. The alert flow's own
    catch-up and the 5-minute escalation check handle what a lost event would miss.
    """
    risky = written[written["severity"].isin(["HIGH", "CRITICAL"])]
    if risky.empty:
        return risky
    with connect(Role.READER, settings or get_settings()) as conn:
        previous: dict[str, str] = dict(
            conn.execute(
                "select distinct on (equipment_id) equipment_id, severity from ops.predictions "
                "where equipment_id = any(%s) and not (id = any(%s)) "
                "order by equipment_id, ts desc, id desc",
                (list(risky["equipment_id"]), [int(i) for i in risky["id"]]),
            ).fetchall()
        )
    pairs = zip(risky["equipment_id"], risky["severity"], strict=True)
    changed = [previous.get(equipment) != severity for equipment, severity in pairs]
    return risky[changed]


def emit_prediction_events(written: pd.DataFrame, settings: Settings | None = None) -> int:
    """Emit `emps.prediction.high|critical` where the severity changed; returns how many."""
    return emit_events_for(severity_changes(written, settings))


def emit_events_for(changed: pd.DataFrame, handled: Collection[int] = ()) -> int:
    """Emit `emps.prediction.high|critical` for each HIGH/CRITICAL row, labelled handled when
    its prediction id is in `handled` (its alert raised already); returns how many."""
    from prefect.events import emit_event

    count = 0
    for row in changed.to_dict("records"):
        event = event_for(row, handled=int(row["id"]) in handled)
        if event is not None:
            name, resource, payload = event
            emit_event(event=name, resource=resource, payload=payload)
            count += 1
    return count


@dataclass
class ScoreReport:
    model_version: str
    scored: int
    by_severity: dict[str, int] = field(default_factory=dict)
    events: int = 0
    registry_unreachable: bool = False
    champion_moved_in_ui: bool = False
    champion_refused: str | None = None  # why the alias's version was not used


def score_equipment(
    settings: Settings | None = None,
    equipment_ids: Sequence[str] | None = None,
    only_unscored: bool = True,
    emit_events: bool = True,
) -> ScoreReport:
    """Score the latest feature row of each equipment with new data (or of `equipment_ids`),
    banding severity with the thresholds in force (ops.thresholds)."""
    settings = with_admin_thresholds(settings)
    champion = load_champion(settings)
    moved = False
    if not champion.stale:
        moved = registry.note_champion_moves(champion.alias_version, settings)
    features = read_latest_features(settings, equipment_ids, only_unscored)
    predictions = score_frame(champion.model, champion.version, features, settings)
    written = write_predictions(predictions, settings)
    events = emit_prediction_events(written, settings) if emit_events else 0
    return ScoreReport(
        model_version=champion.version,
        scored=len(written),
        by_severity={k: int(v) for k, v in written["severity"].value_counts().items()},
        events=events,
        registry_unreachable=champion.stale,
        champion_moved_in_ui=moved,
        champion_refused=champion.refused,
    )


def _horizon_label(equipment_type: str | None, settings: Settings) -> str:
    """The failure horizon of an equipment type in its unit ('7 d', '30 cycles')."""
    catalog = load_catalog(settings.catalog_path)
    etype = catalog.equipment_types.get(equipment_type or "")
    return etype.horizon_label if etype else f"{catalog.max_horizon_days:g} d"


def predict_equipment(
    equipment_id: str,
    overrides: Mapping[str, float] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """A prediction for one equipment from its latest features, not stored (the old POST /predict).

    `overrides` is the dashboard's "what if": feature values (e.g. {"vibration": 9.5,
    "vibration_slope_w3": 0.4}) replacing the latest ones before predicting.
    """
    settings = with_admin_thresholds(settings)
    champion = load_champion(settings, max_age_s=settings.ml.alias_max_age_s)
    model = champion.model
    row = read_latest_feature_row(equipment_id, settings)
    if row is None:
        raise LookupError(
            f"equipment {equipment_id!r} has no feature rows: check the id, or wait for its "
            "readings to be ingested and the dbt build to run"
        )
    _check_overrides(overrides, champion)
    row.update({name: float(value) for name, value in (overrides or {}).items()})
    # One row needs no DataFrame: building one costs more than the forest walk.
    types = [row.get("equipment_type")]
    scored = _predict_matrix(model, model.vector(row), types, settings)
    return _prediction(
        row["equipment_id"], row["ts"], types[0], scored, 0, champion, overrides, settings
    )


@dataclass
class BatchPrediction:
    """What one call of `predict_many` says: a prediction per equipment it could score, and
    which it could not."""

    predictions: list[dict[str, Any]]
    not_registered: list[str]
    no_features: list[str]
    model_version: str | None
    next_offset: int | None = None  # when a page of the whole fleet was asked for

    def only(self, equipment_ids: Sequence[str]) -> BatchPrediction:
        """The part of this answer about `equipment_ids`, in their order (a call made for
        several requests at once, cut back to one request's)."""
        wanted = list(dict.fromkeys(equipment_ids))
        by_id = {p["equipment_id"]: p for p in self.predictions}
        unknown, featureless = set(self.not_registered), set(self.no_features)
        return BatchPrediction(
            [by_id[i] for i in wanted if i in by_id],
            [i for i in wanted if i in unknown],
            [i for i in wanted if i in featureless],
            self.model_version,
        )

    def not_scored(self) -> list[dict[str, str]]:
        """Each equipment not scored: its id, the reason (not_registered, no_features), and
        what that means in words."""
        return [
            {
                "equipment_id": i,
                "reason": "not_registered",
                "detail": f"equipment {i} is not registered",
            }
            for i in self.not_registered
        ] + [
            {
                "equipment_id": i,
                "reason": "no_features",
                "detail": f"equipment {i} has no feature rows yet: wait for its readings to be "
                "ingested and the dbt build to run",
            }
            for i in self.no_features
        ]


def predict_many(
    equipment_ids: Sequence[str] | None = None,
    overrides: Mapping[str, float] | None = None,
    settings: Settings | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> BatchPrediction:
    """Predictions for many equipment at once (or for `limit` registered equipment after
    `offset`, in id order, when `equipment_ids` is None), not stored: one read of their latest
    feature rows, one walk of the forest. Each answer is the one `predict_equipment` gives.
    Predictions keep the order of `equipment_ids`; a repeated id is answered once."""
    settings = with_admin_thresholds(settings)
    if equipment_ids is None:
        page = registered_equipment(None, settings, None if limit is None else limit + 1, offset)
        more = limit is not None and len(page) > limit
        asked = page[:limit] if more else page
        next_offset = offset + len(asked) if more else None
    else:
        asked = list(dict.fromkeys(equipment_ids))
        next_offset = None
    registered, rows = read_latest_feature_rows(asked, settings) if asked else ([], {})
    known = set(registered)
    wanted = [i for i in asked if i in known]
    not_registered = [i for i in asked if i not in known]
    if not wanted:
        return BatchPrediction([], not_registered, [], None, next_offset)
    champion = load_champion(settings, max_age_s=settings.ml.alias_max_age_s)
    _check_overrides(overrides, champion)
    no_features = [i for i in wanted if i not in rows]
    found = [rows[i] for i in wanted if i in rows]
    if not found:
        return BatchPrediction([], not_registered, no_features, champion.version, next_offset)
    model = champion.model
    for row in found:
        row.update({name: float(value) for name, value in (overrides or {}).items()})
    types = [row.get("equipment_type") for row in found]
    # Rows straight into the matrix: a DataFrame of a few rows costs more than the forest walk.
    X = np.vstack([model.vector(row) for row in found])
    scored = _predict_matrix(model, X, types, settings)
    predictions = [
        _prediction(
            row["equipment_id"], row["ts"], types[i], scored, i, champion, overrides, settings
        )
        for i, row in enumerate(found)
    ]
    return BatchPrediction(predictions, not_registered, no_features, champion.version, next_offset)


def _check_overrides(overrides: Mapping[str, float] | None, champion: Champion) -> None:
    """A ValueError naming the overrides that are not features of the champion."""
    names = champion.model.trained_features
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        examples = ", ".join(f"'{name}'" for name in names[:2])
        raise ValueError(
            f"cannot set {', '.join(unknown)}: not features of model version {champion.version} "
            f"(its features are the catalog's sensors' levels and window statistics, e.g. "
            f"{examples})"
        )


def _prediction(
    equipment_id: str,
    ts: Any,
    equipment_type: str | None,
    scored: RowPredictions,
    i: int,
    champion: Champion,
    overrides: Mapping[str, float] | None,
    settings: Settings,
) -> dict[str, Any]:
    """Row `i` of scored predictions as the answer of a manual prediction."""
    p = float(scored.probability[i])
    assessment = scored.assessments[i]
    return {
        "equipment_id": equipment_id,
        "ts": pd.Timestamp(ts).isoformat(),
        "failure_probability": p,
        "health_score": health_score_for(p),
        "severity": severity_for(p, settings.thresholds).value,
        "days_until_failure": _optional(float(scored.days[i])),
        "remaining_life": _optional(float(scored.remaining_life[i])),
        "life_unit": scored.units[i],
        "remaining_life_beyond": bool(scored.beyond[i]),
        "assessment": assessment.state,
        "assessment_reason": assessment.reason,
        "horizon": _horizon_label(equipment_type, settings),
        "model_version": champion.version,
        "explanation": scored.explanation[i],
        "what_if": dict(overrides or {}),
        "registry_unreachable": champion.stale,
        "champion_refused": champion.refused,
    }
