"""Operating regimes: the readings of a type with setting channels (altitude, load, throttle)
grouped by their settings, so that each sensor is compared with its own regime's norm.

A turbine at cruise and at take-off reads differently while equally healthy; without regimes, the
settings' effect would swamp the wear. The regimes are found once, by k-means on the settings of
a sample of the type's readings (each setting scaled by its standard deviation), and stored in
raw.operating_regimes; dbt puts each slot in the regime whose centre is nearest and learns each
regime's norms (int_regime_norms). Refitting changes every level, so it is followed by a full
feature build.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from emps.catalog import Catalog
from emps.db import one

log = logging.getLogger(__name__)

# Readings of a type (with every setting present) before its regimes are fitted.
MIN_READINGS = 200
SAMPLE_READINGS = 20_000
SILHOUETTE_SAMPLE = 4_000
MAX_AUTO_REGIMES = 8
# Under this silhouette the settings form no distinct groups: one regime.
MIN_SILHOUETTE = 0.5


@dataclass
class RegimeFit:
    equipment_type: str
    settings: list[str]
    centres: np.ndarray  # regimes x settings, in the settings' units
    scale: np.ndarray  # per setting
    shares: np.ndarray  # per regime: share of the sampled readings
    silhouette: float | None
    readings: int

    @property
    def regimes(self) -> int:
        return len(self.centres)


def fit_regimes(
    values: np.ndarray, requested: int | str = "auto", seed: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float | None]:
    """(centres, scale, shares, silhouette) of the settings `values` (readings x settings).

    `requested`: a number of regimes, or 'auto': the k from 2 to 8 with the best silhouette,
    one regime when no k separates the settings well (silhouette under 0.5).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    values = np.asarray(values, dtype=np.float64)
    scale = values.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    scaled = values / scale
    distinct = len(np.unique(np.round(scaled, 6), axis=0))
    rng = np.random.default_rng(seed)
    check = scaled[rng.choice(len(scaled), min(len(scaled), SILHOUETTE_SAMPLE), replace=False)]

    def cluster(k: int):
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(scaled)

    best, silhouette = None, None
    if requested == "auto":
        for k in range(2, min(MAX_AUTO_REGIMES, distinct - 1) + 1):
            model = cluster(k)
            score = float(silhouette_score(check, model.predict(check)))
            if silhouette is None or score > silhouette:
                best, silhouette = model, score
        if best is None or silhouette is None or silhouette < MIN_SILHOUETTE:
            best = None
    elif int(requested) > 1:
        best = cluster(min(int(requested), distinct))
        if best.n_clusters > 1 and len(check) > best.n_clusters:
            silhouette = float(silhouette_score(check, best.predict(check)))
    if best is None:
        centres = scaled.mean(axis=0, keepdims=True)
        labels = np.zeros(len(scaled), dtype=int)
    else:
        centres, labels = best.cluster_centers_, best.labels_
    # Number the regimes in a stable order: by their centres, first setting first.
    order = np.lexsort(np.round(centres, 6).T[::-1])
    shares = np.bincount(labels, minlength=len(centres))[order] / len(labels)
    return centres[order] * scale, scale, shares, silhouette


def _sample(conn: psycopg.Connection, equipment_type: str, settings: list[str]) -> np.ndarray:
    columns = sql.SQL(", ").join(sql.Identifier("r", s) for s in settings)
    present = sql.SQL(" and ").join(
        sql.SQL("{} is not null").format(sql.Identifier("r", s)) for s in settings
    )
    (total,) = one(
        conn.execute(
            sql.SQL(
                "select count(*) from raw.sensor_readings r "
                "join raw.equipment e using (equipment_id) "
                "where e.equipment_type = %s and {}"
            ).format(present),
            (equipment_type,),
        )
    )
    if total < MIN_READINGS:
        return np.empty((total, len(settings)))
    share = min(1.0, SAMPLE_READINGS / total)
    rows = conn.execute(
        sql.SQL(
            "select {} from raw.sensor_readings r join raw.equipment e using (equipment_id) "
            "where e.equipment_type = %s and {} and random() < %s"
        ).format(columns, present),
        (equipment_type, share),
    ).fetchall()
    return np.array(rows, dtype=np.float64)


def ensure_regimes(
    conn: psycopg.Connection, catalog: Catalog, refit: bool = False, seed: int = 7
) -> list[RegimeFit]:
    """Fit the regimes of every type with settings that has none yet (all of them with
    `refit`) and enough readings; returns the fits made (each calls for a full feature build)."""
    fitted = []
    known = {row[0] for row in conn.execute("select equipment_type from raw.operating_regimes")}
    for name in catalog.type_names:
        settings = catalog.type_settings(name)
        if not settings or (name in known and not refit):
            continue
        values = _sample(conn, name, settings)
        if len(values) < MIN_READINGS:
            log.info(
                "%s: %d readings with every setting; regimes are fitted from %d on",
                name,
                len(values),
                MIN_READINGS,
            )
            continue
        requested = catalog.equipment_types[name].features.regimes
        centres, scale, shares, silhouette = fit_regimes(values, requested, seed)
        fit = RegimeFit(name, settings, centres, scale, shares, silhouette, len(values))
        store_regimes(conn, fit)
        fitted.append(fit)
        log.info(
            "%s: %d operating regime(s) from %d readings (silhouette %s)",
            name,
            fit.regimes,
            len(values),
            "n/a" if silhouette is None else f"{silhouette:.2f}",
        )
    return fitted


def store_regimes(conn: psycopg.Connection, fit: RegimeFit) -> None:
    with conn.transaction():
        conn.execute(
            "delete from raw.operating_regimes where equipment_type = %s", (fit.equipment_type,)
        )
        conn.cursor().executemany(
            "insert into raw.operating_regimes "
            "(equipment_type, regime, setting, centre, scale, share) values (%s, %s, %s, %s, %s, %s)",
            [
                (
                    fit.equipment_type,
                    regime,
                    setting,
                    float(fit.centres[regime, j]),
                    float(fit.scale[j]),
                    float(fit.shares[regime]),
                )
                for regime in range(fit.regimes)
                for j, setting in enumerate(fit.settings)
            ],
        )
