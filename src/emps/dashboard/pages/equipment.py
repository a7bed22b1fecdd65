"""Equipment detail: sensor trends against the normal band, failure risk over time, history."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from emps.dashboard import data
from emps.dashboard.ui import (
    SEVERITY_ORDER,
    SEVERITY_SCALE,
    as_of,
    pick_range,
    plain,
    require_user,
)
from emps.dashboard.whatif import render_what_if
from emps.domain import Severity, assessment_words, remaining_life_words

require_user()
st.title("Equipment")

ids = data.equipment_ids()
requested = st.query_params.get("equipment")
if requested and requested not in ids:
    st.error(f"Equipment {plain(requested)} is not registered.")
    requested = None
if not ids:
    st.info("No equipment is registered yet.")
    st.stop()
index = ids.index(requested) if requested else 0
equipment_id = st.selectbox("Equipment", ids, index=index, key=f"eq_select_{requested}")
if st.query_params.get("equipment") != equipment_id:
    st.query_params["equipment"] = equipment_id  # keeps the URL shareable

health = data.equipment_health(equipment_id) or {}
st.caption(
    f"{plain(health.get('equipment_type', '?'))} at {plain(health.get('site', '?'))} · "
    f"model version {plain(health.get('model_version') or 'none yet')} · "
    f"latest prediction written {as_of(health.get('predicted_at'))}, "
    f"refreshed into the fleet view {as_of(health.get('prediction_as_of'))}"
)


def _value(key: str, fmt: str = "{}") -> str:
    value = health.get(key)
    return "–" if value is None or pd.isna(value) else fmt.format(value)


def _optional(key: str):
    value = health.get(key)
    return None if value is None or pd.isna(value) else value


cols = st.columns(5)
cols[0].metric("Health score", _value("health_score", "{:.0f}"))
cols[1].metric("Severity", _value("severity"))
cols[2].metric("Failure probability", _value("failure_probability", "{:.0%}"))
life = remaining_life_words(
    _optional("remaining_life"), _optional("life_unit"), _optional("remaining_life_beyond")
)
cols[3].metric("Remaining life", life or "–")
cols[4].metric("Last reading (UTC)", _value("last_reading_at", "{:%d %b %H:%M}"))
# Never a silent LOW: a prediction resting on too few readings, a stuck or silent sensor, or
# values the model never saw says so next to its severity.
caveat = assessment_words(_optional("assessment"), _optional("assessment_reason"))
if caveat:
    last = _optional("last_severity")
    aged = (
        f" Last prediction before that: {plain(last)}." if health.get("is_silent") and last else ""
    )
    st.warning(f"Assessment: {plain(caveat)}.{aged}")

start, end = pick_range("eq", default="Last 7 days")
limits = data.thresholds()

st.subheader("Failure probability")
history = data.prediction_history(equipment_id, start, end)
if history.empty:
    st.info("No predictions for this equipment in the selected range.")
else:
    rules = pd.DataFrame(
        {
            "threshold": [band.value for band in Severity.banded()],
            "value": [limits[band.threshold_key] for band in Severity.banded()],
        }
    )
    line = (
        alt.Chart(history)
        .mark_line(point=len(history) < 60)
        .encode(
            x=alt.X("ts:T", title=None),
            y=alt.Y("failure_probability:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
            tooltip=["ts:T", alt.Tooltip("failure_probability:Q", format=".0%"), "model_version"],
        )
    )
    threshold_lines = (
        alt.Chart(rules)
        .mark_rule(strokeDash=[4, 4])
        .encode(
            y="value:Q",
            color=alt.Color("threshold:N", scale=SEVERITY_SCALE, sort=SEVERITY_ORDER),
            tooltip=["threshold", "value"],
        )
    )
    st.altair_chart(line + threshold_lines, width="stretch")

st.subheader("Sensor trends")
trend = data.sensor_trend(equipment_id, start, end)
bands = data.envelopes(health.get("equipment_type") or "")
if trend.empty:
    st.info("No readings for this equipment in the selected range.")
else:
    chart_cols = st.columns(2)
    charted = [band for band in bands.itertuples() if band.sensor in trend.columns]
    for i, band in enumerate(charted):
        series = trend[["ts", band.sensor]].rename(columns={band.sensor: "value"}).dropna()
        if series.empty:
            continue
        title = f"{band.sensor} ({band.unit})" + (
            ", operating setting" if band.role == "setting" else ""
        )
        layers = []
        if pd.notna(band.normal_low):
            shade = pd.DataFrame({"low": [band.normal_low], "high": [band.normal_high]})
            layers.append(
                alt.Chart(shade)
                .mark_rect(opacity=0.15, color="#4c9a2a")
                .encode(y="low:Q", y2="high:Q")
            )
        layers.append(
            alt.Chart(series)
            .mark_line()
            .encode(
                x=alt.X("ts:T", title=None),
                y=alt.Y("value:Q", title=band.unit, scale=alt.Scale(zero=False)),
                tooltip=["ts:T", alt.Tooltip("value:Q", format=".2f")],
            )
        )
        chart_cols[i % 2].altair_chart(
            alt.layer(*layers).properties(title=title, height=180), width="stretch"
        )
    st.caption("Shaded: the normal operating band of this equipment type (sensor catalog).")

st.subheader("Latest prediction: top contributing sensors")
explanation = health.get("explanation")
if isinstance(explanation, list) and explanation:
    drivers = pd.DataFrame(explanation)
    st.altair_chart(
        alt.Chart(drivers)
        .mark_bar()
        .encode(
            x=alt.X("contribution:Q"),
            y=alt.Y("label:N", sort="-x", title=None),
            tooltip=["feature", "sensor", "contribution", "value"],
        ),
        width="stretch",
    )
else:
    st.info("No explanation recorded for the latest prediction.")

left, right = st.columns(2)
with left:
    st.subheader("Alerts")
    st.dataframe(
        data.alerts(equipment_id=equipment_id)[
            ["alert_id", "severity", "status", "created_at", "minutes_to_acknowledge", "message"]
        ],
        hide_index=True,
        width="stretch",
    )
with right:
    st.subheader("Maintenance")
    st.dataframe(data.maintenance_history(equipment_id), hide_index=True, width="stretch")

render_what_if(equipment_id)
