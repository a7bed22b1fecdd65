"""The dashboard's cached reads: thin `st.cache_data` wrappers over emps.queries (and the
champion's backtest, emps.ml.backtest).

TTLs come from settings (overview 5 min, details 2 min, trends 15 min by default); the sidebar's
refresh button and every write clear them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from emps import queries
from emps.domain import Severity
from emps.settings import get_settings

_settings = get_settings()
OVERVIEW_TTL = _settings.dashboard.cache_ttl_overview_s
DETAILS_TTL = _settings.dashboard.cache_ttl_details_s
TRENDS_TTL = _settings.dashboard.cache_ttl_trends_s


def clear() -> None:
    st.cache_data.clear()


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def sites() -> list[str]:
    return queries.sites()


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def equipment_types() -> list[str]:
    return queries.equipment_types()


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def equipment_ids() -> list[str]:
    return queries.equipment_ids()


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner="Loading fleet health…")
def fleet_health(
    sites: tuple, types: tuple, severities: tuple, limit: int | None = None
) -> pd.DataFrame:
    return queries.fleet_health(sites, types, severities, limit=limit)


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def fleet_summary(sites: tuple, types: tuple, severities: tuple) -> pd.DataFrame:
    return queries.fleet_summary(sites, types, severities)


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def activity_summary() -> dict[str, int]:
    return queries.activity_summary()


@st.cache_data(ttl=OVERVIEW_TTL, show_spinner=False)
def thresholds() -> dict[str, float]:
    return queries.thresholds()


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def equipment_health(equipment_id: str) -> dict | None:
    return queries.equipment_health(equipment_id)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def envelopes(equipment_type: str) -> pd.DataFrame:
    return queries.envelopes(equipment_type)


@st.cache_data(ttl=TRENDS_TTL, show_spinner="Loading sensor trends…")
def sensor_trend(equipment_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    return queries.sensor_trend(equipment_id, start, end)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def prediction_history(equipment_id: str, start: datetime, end: datetime) -> pd.DataFrame:
    return queries.prediction_history(equipment_id, start, end)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def maintenance_history(equipment_id: str) -> pd.DataFrame:
    return queries.maintenance_history(equipment_id)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def alerts(
    statuses: tuple = (),
    severities: tuple = (),
    sites: tuple = (),
    since: datetime | None = None,
    until: datetime | None = None,
    equipment_id: str | None = None,
) -> pd.DataFrame:
    return queries.alerts(statuses, severities, sites, since, until, equipment_id)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def notification_backlog() -> queries.Backlog:
    return queries.notification_backlog()


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def maintenance_schedule(sites: tuple = ()) -> pd.DataFrame:
    return queries.maintenance_schedule(sites)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def alert_statistics(start: datetime, end: datetime) -> pd.DataFrame:
    return queries.alert_statistics(start, end)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def failures_caught(start: datetime, end: datetime) -> pd.DataFrame:
    return queries.failures_caught(start, end)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def model_promotions() -> pd.DataFrame:
    return queries.model_promotions()


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def ingest_volume(start: datetime, end: datetime) -> pd.DataFrame:
    return queries.ingest_volume(start, end)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def ingest_files(statuses: tuple = ()) -> pd.DataFrame:
    return queries.ingest_files(statuses)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def quarantined_rows(kinds: tuple = (), open_only: bool = False) -> pd.DataFrame:
    return queries.quarantined_rows(kinds, open_only)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def conflicts(open_only: bool = True) -> pd.DataFrame:
    return queries.conflicts(open_only)


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def landing_ignored() -> pd.DataFrame:
    return queries.landing_ignored()


@st.cache_data(ttl=DETAILS_TTL, show_spinner=False)
def operations_alerts(open_only: bool = True) -> pd.DataFrame:
    return queries.operations_alerts(open_only)


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def backtest_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """A range widened to whole hours, so the page's reruns within an hour share one replay."""
    last = _hour_floor(end)
    return _hour_floor(start), last if last == end else last + timedelta(hours=1)


@st.cache_data(ttl=TRENDS_TTL, show_spinner="Replaying the history with the champion…")
def champion_history(start: datetime, end: datetime) -> tuple[Any, str | None]:
    """(the champion's scores of the stored history from `start` to `end`, None and why when
    there is no champion to replay). Band-independent: every band tried reuses it."""
    # The model's code (scikit-learn) loads on the pages that replay a model, not on every page.
    from emps.ml.backtest import score_history
    from emps.ml.predict import load_champion

    try:
        champion = load_champion()
        return score_history(champion.model, champion.version, start, end), None
    except Exception as exc:  # no champion, registry down, features of another catalog
        return None, str(exc)


@st.cache_data(ttl=TRENDS_TTL, show_spinner=False)
def backtest(
    start: datetime, end: datetime, bands: tuple[float, float, float]
) -> tuple[Any, str | None]:
    """(the champion's backtest from `start` to `end` at `bands` (MEDIUM, HIGH, CRITICAL),
    None and why when there is none)."""
    from emps.ml.backtest import replay
    from emps.ml.dataset import THRESHOLD_KEYS

    history, why = champion_history(start, end)
    if history is None:
        return None, why
    return replay(history, bands=dict(zip(THRESHOLD_KEYS, bands, strict=True))), None


def bands_in_force() -> tuple[float, float, float]:
    """(MEDIUM, HIGH, CRITICAL) as the Admin page last saved them."""
    values = thresholds()
    medium, high, critical = (values[band.threshold_key] for band in Severity.banded())
    return medium, high, critical
