"""What the model reads: training examples and latest feature rows from the dbt marts, one query each.

The model never computes features itself: every feature is a column of
`analytics.fct_equipment_features` (dbt), so training and scoring see exactly the same numbers.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.rows import TupleRow, dict_row

from emps.catalog import WINDOW_STATS, Catalog, load_catalog
from emps.db import Role, connect, database_url, one
from emps.settings import Settings, get_settings

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

LABEL = "fails_within_horizon"
DAYS_LABEL = "days_until_failure"
# False while the horizon after a row is still open and no failure is known: the label may flip.
LABEL_FINAL = "label_is_final"
ID_COLUMNS = ("equipment_id", "slot", "ts", "equipment_type", "site")


class FeaturesMissing(ValueError):
    """The feature rows lack columns of the catalog's feature list (built by older definitions)."""


def feature_columns(columns: Sequence[str], catalog: Catalog | None = None) -> list[str]:
    """The model's features: the catalog's explicit feature list, every one of which `columns`
    must hold (never a prefix match: a channel named like a label cannot become a feature)."""
    catalog = catalog or load_catalog()
    names = catalog.feature_names()
    present = set(columns)
    missing = [name for name in names if name not in present]
    if missing:
        raise FeaturesMissing(
            f"the feature rows lack {len(missing)} feature(s) of the catalog "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): run a full "
            "`emps dbt build --full-refresh` after changing the catalog"
        )
    return names


def _window_words(catalog: Catalog, k: int) -> str:
    """'24 h' when every type's k-th window is that long, else 'window k'."""
    labels = {etype.window_label(k) for etype in catalog.equipment_types.values()}
    return labels.pop() if len(labels) == 1 else f"window {k}"


_WINDOW_STAT = re.compile(rf"^({'|'.join(WINDOW_STATS)})_w(\d+)$")
_STAT_WORDS = {
    "mean": "{sensor} mean over {window}",
    "std": "{sensor} variability over {window}",
    "slope": "{sensor} trend over {window}",
    "outside": "share of {sensor} slots outside its norm over {window}",
}


def feature_label(column: str, catalog: Catalog | None = None) -> tuple[str, str | None]:
    """(what a technician reads, sensor) for a feature column: ("vibration trend over 24 h",
    "vibration")."""
    catalog = catalog or load_catalog()
    longest = _window_words(catalog, catalog.window_count)
    if column == "missing_rate":
        return f"share of missing readings over {longest}", None
    if column == "since_maintenance":
        units = {t.clock.unit for t in catalog.equipment_types.values()}
        unit = units.pop() if len(units) == 1 else "clock unit"
        return f"{unit}s since last maintenance", None
    if column == "baseline_age":
        units = {t.clock.unit for t in catalog.equipment_types.values()}
        unit = units.pop() if len(units) == 1 else "clock unit"
        return f"{unit}s since the end of its baseline span", None
    sensor, rest = catalog.feature_sensor(column)
    if sensor is None:
        return column.replace("_", " "), None
    name = sensor.replace("_", " ")
    if rest == "now":
        return f"{name} level now", sensor
    if rest == "dev_lag":
        return f"{name} against its own baseline", sensor
    if rest == "drift_lag":
        return f"{name} drift from its baseline over {longest}", sensor
    if rest == "site_drift_lag":
        return f"{name} drift against the machines at its site", sensor
    match = _WINDOW_STAT.match(rest)
    if match:
        stat, k = match.groups()
        return _STAT_WORDS[stat].format(sensor=name, window=_window_words(catalog, int(k))), sensor
    return f"{name} {rest.replace('_', ' ')}", sensor


def _relation(name: str) -> sql.Identifier:
    """A schema-qualified relation name from settings, quoted (never pasted into SQL)."""
    return sql.Identifier(*name.split("."))


def _read_frame(
    query: sql.Composable,
    params: Params | None,
    settings: Settings,
    pooled: bool = False,
) -> pd.DataFrame:
    """Run `query` through COPY (much faster than row fetching for wide frames) into a DataFrame;
    `pooled` for short reads a long-lived process repeats (a new connection costs more)."""
    buffer = io.BytesIO()
    with _connection(settings, pooled) as conn, conn.cursor() as cur:
        statement = sql.SQL("copy ({}) to stdout with (format csv, header)").format(query)
        with cur.copy(statement, params) as copy:
            for chunk in copy:
                buffer.write(chunk)
    buffer.seek(0)
    if buffer.getbuffer().nbytes == 0:
        return pd.DataFrame()
    frame = pd.read_csv(buffer, low_memory=False)
    for column in ("ts", "next_failure_at", "failed_at", "repaired_at"):
        if column in frame.columns:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    for column in (LABEL, LABEL_FINAL):
        if column in frame.columns:
            frame[column] = frame[column].map({"t": True, "f": False, True: True, False: False})
            frame[column] = frame[column].astype(bool)
    return frame


@contextmanager
def _connection(settings: Settings, pooled: bool) -> Iterator[psycopg.Connection[TupleRow]]:
    """A reader connection in UTC: one of the pool's, or a new one closed after use."""
    if pooled:
        with _pool(database_url(Role.READER, settings)).connection() as conn:
            yield conn
        return
    with connect(Role.READER, settings) as conn:
        conn.execute("set time zone 'UTC'")
        yield conn


def read_training_examples(
    settings: Settings | None = None, sample_minutes: int | None = None
) -> pd.DataFrame:
    """Labelled feature rows, thinned to the first row per equipment per `sample_minutes` window.

    Consecutive minutes of one machine are nearly identical; thinning keeps training fast without
    losing information the model could use.
    """
    settings = settings or get_settings()
    minutes = sample_step_minutes(settings, sample_minutes)
    step = 60 * minutes
    # Thin on the feature table first, so the labelling view only runs for the kept rows.
    query = sql.SQL(
        "select x.* from {examples} x where (x.equipment_id, x.ts) in ("
        "select distinct on (equipment_id, floor(extract(epoch from ts) / %s)) equipment_id, ts "
        "from {features} order by equipment_id, floor(extract(epoch from ts) / %s), ts"
        ") order by x.equipment_id, x.ts"
    ).format(
        examples=_relation(settings.ml.examples_relation),
        features=_relation(settings.ml.features_relation),
    )
    frame = _read_frame(query, (step, step), settings)
    frame.attrs["sample_minutes"] = minutes
    return frame


def sample_step_minutes(settings: Settings | None = None, sample_minutes: int | None = None) -> int:
    """The thinning step of the training examples: `sample_minutes` (EMPS_ML_SAMPLE_MINUTES), or
    wider when that would read more than EMPS_ML_MAX_TRAINING_ROWS rows (the sum of each
    equipment's feature time span, one row per step, plus its first row)."""
    settings = settings or get_settings()
    base = sample_minutes or settings.ml.sample_minutes
    query = sql.SQL(
        "select count(*), coalesce(sum(extract(epoch from s.last - s.first)), 0) "
        "from raw.equipment e cross join lateral ("
        "select (select min(ts) from {f} x where x.equipment_id = e.equipment_id) as first, "
        "(select max(ts) from {f} x where x.equipment_id = e.equipment_id) as last"
        ") s where s.first is not null"
    ).format(f=_relation(settings.ml.features_relation))
    with connect(Role.READER, settings) as conn:
        equipment, span_s = one(conn.execute(query))
    room = settings.ml.max_training_rows - int(equipment)
    if float(span_s) <= 0 or (room > 0 and float(span_s) / (60 * base) <= room):
        return base
    return max(base, math.ceil(float(span_s) / 60 / max(room, equipment or 1)))


def read_feature_history(
    start: pd.Timestamp,
    end: pd.Timestamp,
    settings: Settings | None = None,
    step_minutes: int | None = None,
    lookback_horizons: int = 3,
    equipment_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Feature rows from `lookback_horizons` failure horizons before `start` (the look-back in
    which a failure's first alert is searched) to `end`, one per equipment per `step_minutes`
    (the training step by default), each with when its equipment's history is known until
    (`last_observed_at`): what a backtest scores (of `equipment_ids` only, when given)."""
    settings = settings or get_settings()
    step = 60 * (step_minutes or sample_step_minutes(settings))
    context = start - lookback_horizons * horizon(settings)
    features = _relation(settings.ml.features_relation)
    query = sql.SQL(
        "select distinct on (x.equipment_id, floor(extract(epoch from x.ts) / %(step)s)) x.*, "
        "o.known_until as _known_until from {features} x join ("
        " select e.equipment_id, (select max(y.ts) from {features} y"
        "  where y.equipment_id = e.equipment_id) as known_until from raw.equipment e"
        ") o on o.equipment_id = x.equipment_id "
        "where x.ts >= %(context)s and x.ts < %(end)s "
        "and (%(ids)s::text[] is null or x.equipment_id = any(%(ids)s::text[])) "
        "order by x.equipment_id, floor(extract(epoch from x.ts) / %(step)s), x.ts"
    ).format(features=features)
    params = {
        "step": step,
        "context": context.to_pydatetime(),
        "end": end.to_pydatetime(),
        "ids": None if equipment_ids is None else list(equipment_ids),
    }
    frame = _read_frame(query, params, settings)
    if not frame.empty:
        frame["last_observed_at"] = pd.to_datetime(frame.pop("_known_until"), utc=True)
    frame.attrs["step_minutes"] = step // 60
    return frame


def read_latest_features(
    settings: Settings | None = None,
    equipment_ids: Sequence[str] | None = None,
    only_unscored: bool = True,
) -> pd.DataFrame:
    """The latest feature row of each registered equipment (or of `equipment_ids`), in
    equipment id order.

    With `only_unscored`, equipment whose latest row is already in ops.predictions is skipped:
    that is "every equipment that got new data since the last scoring run".
    """
    settings = settings or get_settings()
    filters = []
    params: list[list[str]] = []
    if equipment_ids is not None:
        filters.append(sql.SQL("e.equipment_id = any(%s)"))
        params.append(list(equipment_ids))
    if only_unscored:
        filters.append(
            sql.SQL(
                "f.ts > coalesce((select max(p.ts) from ops.predictions p "
                "where p.equipment_id = e.equipment_id), '-infinity')"
            )
        )
    where = sql.SQL(" and ").join(filters) if filters else sql.SQL("true")
    query = sql.SQL(
        "select f.* from raw.equipment e cross join lateral ("
        "select * from {} x where x.equipment_id = e.equipment_id order by x.ts desc limit 1"
        ") f where {} order by f.equipment_id"
    ).format(_relation(settings.ml.features_relation), where)
    # Pooled when ids are named: the API and `emps predict` read a few rows per request.
    return _read_frame(query, params, settings, pooled=equipment_ids is not None)


def registered_equipment(
    equipment_ids: Sequence[str] | None = None,
    settings: Settings | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[str]:
    """The registered ones of `equipment_ids` (or all registered equipment, `limit` of them
    after skipping `offset`), in equipment id order."""
    settings = settings or get_settings()
    with _pool(database_url(Role.READER, settings)).connection() as conn:
        rows = conn.execute(
            "select equipment_id from raw.equipment "
            "where %(ids)s::text[] is null or equipment_id = any(%(ids)s::text[]) "
            "order by equipment_id limit %(limit)s offset %(offset)s",
            {
                "ids": None if equipment_ids is None else list(equipment_ids),
                "limit": limit,
                "offset": offset,
            },
        ).fetchall()
    return [row[0] for row in rows]


@lru_cache(maxsize=4)
def _pool(url: str) -> ConnectionPool:
    """Reused connections for one-equipment reads: opening one costs more than the query."""
    from psycopg_pool import ConnectionPool

    return ConnectionPool(
        url,
        min_size=1,
        max_size=4,
        kwargs={
            "connect_timeout": 10,
            "application_name": "emps-predict",
            "autocommit": True,
            "options": "-c timezone=UTC",
        },
        check=ConnectionPool.check_connection,  # survives a database restart
        name="emps-predict",
        open=True,
    )


def read_latest_feature_row(
    equipment_id: str, settings: Settings | None = None
) -> dict[str, Any] | None:
    """The latest feature row of one equipment as {column: value}, None when it has none."""
    settings = settings or get_settings()
    query = sql.SQL("select * from {} where equipment_id = %s order by ts desc limit 1").format(
        _relation(settings.ml.features_relation)
    )
    with _pool(database_url(Role.READER, settings)).connection() as conn:
        return conn.cursor(row_factory=dict_row).execute(query, (equipment_id,)).fetchone()


def read_latest_feature_rows(
    equipment_ids: Sequence[str], settings: Settings | None = None
) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Of `equipment_ids`: the registered ones (in id order), and the latest feature row of each
    one that has any as {equipment_id: {column: value}}. One pooled read and no DataFrame: what
    a prediction for a few equipment costs is mostly this read."""
    settings = settings or get_settings()
    query = sql.SQL(
        "select e.equipment_id as {}, f.* from raw.equipment e left join lateral ("
        "select * from {} x where x.equipment_id = e.equipment_id order by x.ts desc limit 1"
        ") f on true where e.equipment_id = any(%s) order by e.equipment_id"
    ).format(sql.Identifier(_REGISTERED), _relation(settings.ml.features_relation))
    with _pool(database_url(Role.READER, settings)).connection() as conn:
        cur = conn.cursor(row_factory=dict_row).execute(query, (list(equipment_ids),))
        fetched = cur.fetchall()
    registered: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for row in fetched:
        equipment_id = row.pop(_REGISTERED)
        registered.append(equipment_id)
        if row.get("equipment_id") is not None:
            rows[equipment_id] = row
    return registered, rows


_REGISTERED = "_registered_equipment_id"


def horizon(settings: Settings | None = None) -> pd.Timedelta:
    """How far ahead labels look: the catalog's longest failure horizon, in (derived) time."""
    settings = settings or get_settings()
    return pd.Timedelta(days=load_catalog(settings.catalog_path).max_horizon_days)


def horizon_days(settings: Settings | None = None) -> float:
    return horizon(settings).total_seconds() / 86400.0


THRESHOLD_KEYS = ("severity_medium", "severity_high", "severity_critical")


def with_admin_thresholds(settings: Settings | None = None) -> Settings:
    """The settings with the severity bands in force: ops.thresholds, which admins edit on the
    dashboard's Admin page (audited); EMPS_SEVERITY_* seed it (emps.migrate) and serve where
    no platform database exists. Read on every call, through the pool, so a change reaches the
    next scoring run and the next one-equipment prediction."""
    settings = settings or get_settings()
    with _pool(database_url(Role.READER, settings)).connection() as conn:
        rows = conn.execute(
            "select key, value from ops.thresholds where key = any(%s)", (list(THRESHOLD_KEYS),)
        ).fetchall()
    bands = {key: float(value) for key, value in rows}
    if all(getattr(settings.thresholds, key) == value for key, value in bands.items()):
        return settings
    return settings.replace(thresholds=bands)


def read_failure_events(settings: Settings | None = None) -> pd.DataFrame:
    """Recorded failures (for lead-time evaluation)."""
    settings = settings or get_settings()
    query = sql.SQL(
        "select equipment_id, failed_at, repaired_at from raw.failure_events order by failed_at"
    )
    return _read_frame(query, None, settings)


def read_test_units(settings: Settings | None = None) -> pd.DataFrame:
    """The last feature row of each test unit a fleet pack shipped (units cut before they
    failed, never trained on) with its true remaining life at its last reading in the type's
    life unit (`remaining_life`, from the pack's test/rul.csv); empty without test units."""
    settings = settings or get_settings()
    truth = _read_frame(
        sql.SQL("select equipment_id, remaining_life from raw.heldout_remaining_life"),
        None,
        settings,
    )
    if truth.empty:
        return truth
    rows = read_latest_features(
        settings, equipment_ids=truth["equipment_id"].tolist(), only_unscored=False
    )
    life = dict(zip(truth["equipment_id"], truth["remaining_life"], strict=True))
    return rows.assign(remaining_life=rows["equipment_id"].map(life).astype(float))
