"""Analytics: alert volumes and response times, failures caught, model history, ingest volumes."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app import data
from streamlit_app.ui import SEVERITY_ORDER, SEVERITY_SCALE, pick_range, require_user

require_user()
st.title("Analytics")
start, end = pick_range("an", default="Last 30 days")

st.subheader("Alerts over time")
stats = data.alert_statistics(start, end)
if stats.empty:
    st.info("No alerts in this range.")
else:
    volume = (
        alt.Chart(stats)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):O", title=None),
            y=alt.Y("sum(alert_count):Q", title="alerts"),
            color=alt.Color("severity:N", scale=SEVERITY_SCALE, sort=SEVERITY_ORDER),
            tooltip=["yearmonthdate(day):T", "severity", "sum(alert_count):Q"],
        )
    )
    st.altair_chart(volume, width="stretch")
    weighted = stats.assign(
        ack_x=stats["mean_minutes_to_acknowledge"].astype(float) * stats["alert_count"],
        res_x=stats["mean_minutes_to_resolve"].astype(float) * stats["alert_count"],
        ack_n=stats["alert_count"].where(stats["mean_minutes_to_acknowledge"].notna(), 0),
        res_n=stats["alert_count"].where(stats["mean_minutes_to_resolve"].notna(), 0),
    )
    daily = weighted.groupby("day", as_index=False)[["ack_x", "res_x", "ack_n", "res_n"]].sum()
    daily["to acknowledge"] = daily["ack_x"] / daily["ack_n"].replace(0, pd.NA)
    daily["to resolve"] = daily["res_x"] / daily["res_n"].replace(0, pd.NA)
    response = daily.melt("day", ["to acknowledge", "to resolve"], "measure", "minutes").dropna()
    cols = st.columns(2)
    total_ack = weighted["ack_x"].sum() / max(weighted["ack_n"].sum(), 1)
    total_res = weighted["res_x"].sum() / max(weighted["res_n"].sum(), 1)
    cols[0].metric("Mean minutes to acknowledge", f"{total_ack:.1f}")
    cols[1].metric("Mean minutes to resolve", f"{total_res:.1f}")
    if not response.empty:
        st.altair_chart(
            alt.Chart(response)
            .mark_line(point=True)
            .encode(
                x=alt.X("day:T", title=None),
                y=alt.Y("minutes:Q", title="mean minutes"),
                color="measure:N",
                tooltip=["day:T", "measure", alt.Tooltip("minutes:Q", format=".1f")],
            ),
            width="stretch",
        )

st.subheader("Failures caught vs missed")
failures = data.failures_caught(start, end)
if failures.empty:
    st.info("No recorded failure in this range.")
else:
    caught = int(failures["caught"].sum())
    cols = st.columns(3)
    cols[0].metric("Failures", len(failures))
    cols[1].metric("Caught (alert before failure)", caught)
    cols[2].metric("Missed", len(failures) - caught)
    failures = failures.assign(result=failures["caught"].map({True: "caught", False: "missed"}))
    st.altair_chart(
        alt.Chart(failures)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(failed_at):O", title=None),
            y=alt.Y("count():Q", title="failures"),
            color=alt.Color(
                "result:N",
                scale=alt.Scale(domain=["caught", "missed"], range=["#4c9a2a", "#c81e1e"]),
            ),
        ),
        width="stretch",
    )
    st.dataframe(failures, hide_index=True, width="stretch")

st.subheader("Model performance over time")
promotions = data.model_promotions()
if promotions.empty:
    st.info("No model has been promoted yet.")
else:
    metrics = pd.json_normalize(promotions["metrics"].tolist())
    numeric = metrics.select_dtypes("number")
    if not numeric.empty:
        perf = pd.concat([promotions[["promoted_at", "to_version"]], numeric], axis=1).melt(
            ["promoted_at", "to_version"], var_name="metric"
        )
        st.altair_chart(
            alt.Chart(perf)
            .mark_line(point=True)
            .encode(
                x=alt.X("promoted_at:T", title="promoted"),
                y="value:Q",
                color="metric:N",
                tooltip=["to_version", "metric", "value"],
            ),
            width="stretch",
        )
    st.dataframe(promotions.drop(columns=["metrics"]), hide_index=True, width="stretch")

st.subheader("Ingest volumes and quarantine rate")
volume = data.ingest_volume(start, end)
if volume.empty:
    st.info("No file was ingested in this range.")
else:
    rows = volume.melt("day", ["rows_loaded", "rows_duplicate", "rows_quarantined"], "kind", "rows")
    bars = (
        alt.Chart(rows)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):O", title=None),
            y=alt.Y("rows:Q"),
            color="kind:N",
            tooltip=["day:T", "kind", "rows"],
        )
    )
    rate = (
        alt.Chart(volume)
        .mark_line(color="#c81e1e", point=True)
        .encode(
            x=alt.X("yearmonthdate(day):O"),
            y=alt.Y("quarantine_rate:Q", axis=alt.Axis(format="%"), title="quarantine rate"),
        )
    )
    st.altair_chart(alt.layer(bars, rate).resolve_scale(y="independent"), width="stretch")
