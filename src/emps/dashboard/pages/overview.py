"""Fleet overview: what is about to fail, where, and what is being done about it."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from emps.dashboard import data
from emps.dashboard.ui import SEVERITY_ORDER, SEVERITY_SCALE, as_of, require_user
from emps.domain import SETTLING, UNSCORED, assessment_words, remaining_life_words

require_user()
st.title("Fleet overview")

filters = st.columns(3)
site_filter = filters[0].multiselect("Site", data.sites(), key="ov_sites")
type_filter = filters[1].multiselect("Equipment type", data.equipment_types(), key="ov_types")
severity_filter = filters[2].multiselect(
    "Severity", [*reversed(SEVERITY_ORDER), UNSCORED], key="ov_severities"
)

TABLE_ROWS = 1000  # the table lists the most at risk; the figures and charts count everyone
activity = data.activity_summary()
limits = data.thresholds()
silent_limit = limits["silent_minutes"]
filters_key = (tuple(site_filter), tuple(type_filter), tuple(severity_filter))
summary = data.fleet_summary(*filters_key)
fleet = data.fleet_health(*filters_key, limit=TABLE_ROWS)

total = int(summary["equipment"].sum())
counts = summary.groupby("severity")["equipment"].sum()
scored = summary[summary["severity"] != UNSCORED]
untrusted = summary.groupby("assessment")["equipment"].sum()
row: Sequence[DeltaGenerator] = st.columns(7)
row[0].metric("Equipment", total)
row[1].metric("Critical", int(counts.get("CRITICAL", 0)))
row[2].metric("High", int(counts.get("HIGH", 0)))
row[3].metric("Medium", int(counts.get("MEDIUM", 0)))
row[4].metric("Low", int(counts.get("LOW", 0)))
# Whatever their band: predictions resting on too few readings, a stuck or silent sensor, or a
# machine gone silent (see the fleet table's Assessment column).
row[5].metric(
    "Insufficient data",
    int(untrusted.get("insufficient_data", 0)),
    help=f"{int(untrusted.get(SETTLING, 0))} more settling after a service or repair: no alert "
    "opens on them until their longest feature window is past the work",
)
row[6].metric("No current prediction", int(counts.get(UNSCORED, 0)))
row = st.columns(6)
row[0].metric("Active alerts: critical", activity["alerts_critical"])
row[1].metric("Active alerts: high", activity["alerts_high"])
row[2].metric("Unacknowledged alerts", activity["alerts_unacknowledged"])
row[3].metric("Predictions, last hour", activity["predictions_last_hour"])
row[4].metric(
    f"Silent > {silent_limit:g} min", int(summary.loc[summary["silent"], "equipment"].sum())
)
scored_count = int(scored["equipment"].sum())
mean_health = scored["health_sum"].sum() / scored_count if scored_count else None
row[5].metric("Mean health score", "–" if mean_health is None else f"{mean_health:.0f}")
# Predictions and last readings come from tables refreshed after every scoring run; alerts and
# tasks are read live. Say which is which, so a stale refresh is visible.
st.caption(
    f"Health and severity as of the scoring refresh of {as_of(summary['prediction_as_of'].max())}, "
    f"last readings as of {as_of(summary['last_reading_as_of'].max())}; alerts and tasks are "
    f"live. Figures are kept up to {data.OVERVIEW_TTL / 60:g} min: ↻ Refresh data in the "
    "sidebar reloads them."
)

if fleet.empty:
    st.info("No equipment matches these filters.")
    st.stop()

left, right = st.columns([3, 2])
with left:
    st.subheader("Health by site")
    by_site = scored.groupby(["site", "severity"], as_index=False)["equipment"].sum()
    if by_site.empty:
        st.info("No predictions yet: health appears once the scoring flow has run.")
    else:
        chart = (
            alt.Chart(by_site)
            .mark_bar()
            .encode(
                y=alt.Y("site:N", title=None),
                x=alt.X("equipment:Q", stack="normalize", title="share of equipment"),
                color=alt.Color("severity:N", scale=SEVERITY_SCALE, sort=SEVERITY_ORDER),
                order=alt.Order("severity_rank:Q"),
                tooltip=["site", "severity", "equipment"],
            )
            .transform_calculate(
                severity_rank="indexof(['LOW','MEDIUM','HIGH','CRITICAL'], datum.severity)"
            )
        )
        st.altair_chart(chart, width="stretch")
with right:
    st.subheader("Health score distribution")
    deciles = scored.groupby(["site", "health_bucket"], as_index=False)["equipment"].sum()
    if not deciles.empty:
        histogram = (
            alt.Chart(deciles)
            .mark_bar()
            .encode(
                x=alt.X("health_bucket:O", title="health score (from)"),
                y=alt.Y("sum(equipment):Q", title="equipment"),
                color=alt.Color("site:N"),
                tooltip=["site", "health_bucket", "equipment"],
            )
        )
        st.altair_chart(histogram, width="stretch")

st.subheader("Fleet")
shown = (
    f"the {len(fleet):,} most at risk of {total:,}" if len(fleet) < total else "most at risk first"
)
st.caption(f"Equipment, {shown}. Select a row, or pick one below, to open its detail.")
# Remaining life in each type's own unit ("about 4.2 days", "more than 125 cycles"), and
# whether the prediction can be trusted: a LOW resting on a stuck sensor says so.
fleet = fleet.assign(
    remaining_life_text=[
        remaining_life_words(v, u, b)
        for v, u, b in zip(
            fleet["remaining_life"], fleet["life_unit"], fleet["remaining_life_beyond"], strict=True
        )
    ],
    assessment_text=[
        assessment_words(a, r) or ("ok" if a == "ok" else "")
        for a, r in zip(fleet["assessment"], fleet["assessment_reason"], strict=True)
    ],
)
table = fleet[
    [
        "equipment_id",
        "equipment_type",
        "site",
        "health_score",
        "severity",
        "assessment_text",
        "remaining_life_text",
        "last_reading_at",
        "open_alert_severity",
        "open_alert_status",
        "next_task_type",
        "next_task_date",
    ]
]
selection = st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="fleet_table",
    column_config={
        "equipment_id": "Equipment",
        "equipment_type": "Type",
        "site": "Site",
        "health_score": st.column_config.ProgressColumn(
            "Health", min_value=0, max_value=100, format="%d"
        ),
        "severity": "Severity",
        "assessment_text": "Assessment",
        "remaining_life_text": "Remaining life",
        "last_reading_at": st.column_config.DatetimeColumn("Last reading"),
        "open_alert_severity": "Open alert",
        "open_alert_status": "Alert status",
        "next_task_type": "Next task",
        "next_task_date": st.column_config.DatetimeColumn("Next task date"),
    },
)
rows = selection.selection.rows if selection else []
if rows:
    st.switch_page(
        "pages/equipment.py", query_params={"equipment": table.iloc[rows[0]]["equipment_id"]}
    )

pick = st.columns([3, 1])
chosen = pick[0].selectbox("Open equipment", table["equipment_id"].tolist(), key="ov_open")
pick[1].write("")
if pick[1].button("Open detail", key="ov_open_button") and chosen:
    st.switch_page("pages/equipment.py", query_params={"equipment": chosen})

silent = fleet["last_reading_at"].isna() | (
    fleet["minutes_since_last_reading"].astype(float) > silent_limit
)
with st.expander(f"Silent equipment among those listed ({int(silent.sum())})"):
    st.dataframe(
        fleet.loc[silent, ["equipment_id", "equipment_type", "site", "last_reading_at"]],
        hide_index=True,
        width="stretch",
    )
