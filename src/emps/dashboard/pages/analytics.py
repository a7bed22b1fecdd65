"""Analytics: alert volumes and response times, failures caught (live and in the champion's
backtest), model history, ingest volumes."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from emps.dashboard import data
from emps.dashboard.ui import SEVERITY_ORDER, SEVERITY_SCALE, pick_range, plain, require_user


def _weekly_bars(
    frame: pd.DataFrame, title: str, fields: tuple[str, str, str], colours: dict[str, str]
) -> alt.Chart:
    """Stacked bars per week of `frame` (week_start, kind, value): `fields` names the kind and
    value columns and the value axis; `colours` each kind's colour, in stacking order."""
    kind, value, axis = fields
    return (
        alt.Chart(frame, title=title)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(week_start):O", title="week of"),
            y=alt.Y(f"{value}:Q", title=axis),
            color=alt.Color(
                f"{kind}:N", scale=alt.Scale(domain=list(colours), range=list(colours.values()))
            ),
            tooltip=["yearmonthdate(week_start):T", kind, value],
        )
    )


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
    cols: Sequence[DeltaGenerator] = st.columns(2)
    # No acknowledged (or resolved) alert: nothing to average, not a mean of 0.
    for col, label, top, bottom in (
        (cols[0], "Mean minutes to acknowledge", "ack_x", "ack_n"),
        (cols[1], "Mean minutes to resolve", "res_x", "res_n"),
    ):
        count = weighted[bottom].sum()
        col.metric(label, f"{weighted[top].sum() / count:.1f}" if count else "—")
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
    before = failures["before_first_model"].astype(bool)
    caught = int((failures["caught"] & ~before).sum())
    cols = st.columns(4)
    cols[0].metric("Failures", len(failures))
    cols[1].metric(
        "Before the first model",
        int(before.sum()),
        help="Failed before any model was promoted: no alert could have warned of them",
    )
    cols[2].metric("Caught by a live alert", caught)
    cols[3].metric("Missed by the live alerts", int((~before).sum()) - caught)
    result = np.where(
        before, "before the first model", np.where(failures["caught"], "caught", "missed")
    )
    failures = failures.assign(result=result)
    st.altair_chart(
        alt.Chart(failures)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(failed_at):O", title=None),
            y=alt.Y("count():Q", title="failures"),
            color=alt.Color(
                "result:N",
                scale=alt.Scale(
                    domain=["caught", "missed", "before the first model"],
                    range=["#4c9a2a", "#c81e1e", "#9e9e9e"],
                ),
            ),
        ),
        width="stretch",
    )
    st.dataframe(failures, hide_index=True, width="stretch")

st.subheader("Backtest: the champion replayed over this range")
window = data.backtest_window(start, end)
replayed, why = data.backtest(*window, data.bands_in_force())
if replayed is None:
    st.info(f"No backtest: {plain(why)}")
elif replayed.rows == 0:
    st.info("No backtest: no feature rows in this range to replay.")
else:
    total = replayed.total
    lead = f"{replayed.inspection_lead:g} {replayed.life_unit}s"
    cols = st.columns(4)
    cols[0].metric("Alerts it would have raised", total.alerts)
    cols[1].metric(f"Failures warned ≥ {lead} ahead", f"{total.warned} of {total.failures}")
    cols[2].metric(
        f"Median lead ({replayed.life_unit}s)",
        "—" if total.median_lead is None else f"{total.median_lead:.1f}",
        help="Of the failures it alerted on at all",
    )
    cols[3].metric("False alert episodes", total.false_alerts)
    weeks = replayed.weeks_frame()
    if not weeks.empty:
        weeks["true alerts"] = weeks["alerts"] - weeks["false_alerts"]
        alerts = weeks.melt("week_start", ["true alerts", "false_alerts"], "alert", "episodes")
        alerts["alert"] = alerts["alert"].replace({"false_alerts": "false alerts"})
        outcomes = weeks.melt("week_start", ["warned", "late", "missed"], "failure", "count")
        alert_bars = _weekly_bars(
            alerts,
            "Alert episodes per week",
            ("alert", "episodes", "alert episodes"),
            {"true alerts": "#e07b00", "false alerts": "#7a7a7a"},
        )
        failure_bars = _weekly_bars(
            outcomes,
            "Failures per week: warned, late, missed",
            ("failure", "count", "failures"),
            {"warned": "#4c9a2a", "late": "#e0b000", "missed": "#c81e1e"},
        )
        cols = st.columns(2)
        cols[0].altair_chart(alert_bars, width="stretch")
        cols[1].altair_chart(failure_bars, width="stretch")
    st.caption(
        f"Model v{plain(replayed.model_version)} scored the stored features of "
        f"{replayed.equipment} equipment (one row per {replayed.step_minutes} min) with the "
        "bands in force; warned: the first alert came at least the inspection lead ahead; "
        "late: less; false: no failure followed within three failure horizons. Equipment the "
        "model learnt from are replayed too, so this flatters it: `emps model evaluate` gives "
        "figures on held-out equipment. Live alerts are counted above, not here."
    )

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
