"""Maintenance: upcoming tasks as a table and a timeline; create, reschedule, complete."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

import altair as alt
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from emps import actions
from emps.dashboard import data
from emps.dashboard.ui import plain, require_user, run_action, show_flash

user = require_user()
st.title("Maintenance")
show_flash()

sites = st.multiselect("Site", data.sites(), key="mt_sites")
schedule = data.maintenance_schedule(tuple(sites))

now = datetime.now(UTC)
row = st.columns(4)
row[0].metric("Open tasks", len(schedule))
overdue = schedule["scheduled_date"] < now if not schedule.empty else []
row[1].metric("Overdue", int(sum(overdue)))
week = (schedule["scheduled_date"] < now + timedelta(days=7)) if not schedule.empty else []
row[2].metric("Due within 7 days", int(sum(week)))
row[3].metric("Priority 1-2", int((schedule["priority"] <= 2).sum()) if not schedule.empty else 0)

if schedule.empty:
    st.info("No open maintenance task.")
else:
    st.subheader("Timeline")
    timeline = schedule.assign(day=schedule["scheduled_date"].dt.floor("D"))
    calendar = (
        alt.Chart(timeline)
        .mark_rect()
        .encode(
            x=alt.X("yearmonthdate(day):O", title=None),
            y=alt.Y("site:N", title=None),
            color=alt.Color("count():Q", title="tasks", scale=alt.Scale(scheme="oranges")),
            tooltip=["site", alt.Tooltip("yearmonthdate(day):T", title="day"), "count()"],
        )
        .properties(height=max(120, 28 * timeline["site"].nunique()))
    )
    points = (
        alt.Chart(timeline)
        .mark_point(filled=True, size=80)
        .encode(
            x=alt.X("scheduled_date:T", title="scheduled"),
            y=alt.Y("site:N", title=None),
            color=alt.Color("task_type:N", title="task type"),
            shape=alt.Shape("status:N"),
            tooltip=["task_id", "equipment_id", "task_type", "priority", "scheduled_date:T"],
        )
    )
    st.altair_chart(calendar, width="stretch")
    st.altair_chart(points, width="stretch")
    st.dataframe(schedule, hide_index=True, width="stretch", key="schedule_table")

st.subheader("Plan and record work")
if not user.role.can_act:
    st.caption(
        f"You are signed in as a {plain(user.role.value)}: only Technicians and Admins can "
        "create, reschedule or complete tasks."
    )
locked = not user.role.can_act
create_tab, reschedule_tab, complete_tab, failure_tab = st.tabs(
    ["Create", "Reschedule", "Complete", "Record a failure"]
)


with create_tab, st.form("create_task"):
    equipment_id = st.selectbox("Equipment", data.equipment_ids(), key="mt_new_eq")
    cols: Sequence[DeltaGenerator] = st.columns(4)
    task_type = cols[0].selectbox("Type", actions.TASK_TYPES, key="mt_new_type")
    priority = cols[1].slider("Priority (1 = most urgent)", 1, 5, 3, key="mt_new_priority")
    day = cols[2].date_input("Date", now.date() + timedelta(days=1), key="mt_new_day")
    at = cols[3].time_input("Time (UTC)", time(8, 0), key="mt_new_time")
    notes = st.text_area("Notes", max_chars=actions.MAX_NOTE_LENGTH, key="mt_new_notes")
    if st.form_submit_button("Create task", disabled=locked):
        when = datetime.combine(day, at, tzinfo=UTC)
        run_action(
            lambda: actions.create_task(user, equipment_id, task_type, priority, when, notes=notes),
            f"{task_type.capitalize()} task created for {equipment_id}.",
        )

task_labels = {
    int(r.task_id): f"#{r.task_id} {r.task_type} {r.equipment_id} "
    f"({r.scheduled_date:%Y-%m-%d %H:%M})"
    for r in schedule.itertuples()
}
with reschedule_tab, st.form("reschedule_task"):
    task_id = st.selectbox(
        "Task", list(task_labels), format_func=task_labels.__getitem__, key="mt_rs"
    )
    cols = st.columns(2)
    day = cols[0].date_input("New date", now.date() + timedelta(days=2), key="mt_rs_day")
    at = cols[1].time_input("Time (UTC)", time(8, 0), key="mt_rs_time")
    note = st.text_input("Reason", key="mt_rs_note")
    if st.form_submit_button("Reschedule", disabled=locked or not task_labels):
        when = datetime.combine(day, at, tzinfo=UTC)
        run_action(
            lambda: actions.reschedule_task(user, task_id, when, note),
            f"Task #{task_id} moved to {when:%Y-%m-%d %H:%M} UTC.",
        )

with complete_tab, st.form("complete_task"):
    task_id = st.selectbox(
        "Task", list(task_labels), format_func=task_labels.__getitem__, key="mt_cp"
    )
    outcome = st.radio("Outcome", actions.OUTCOMES, horizontal=True, key="mt_cp_outcome")
    cols = st.columns(2)
    done_day = cols[0].date_input("Done on", now.date(), max_value=now.date(), key="mt_cp_day")
    done_at = cols[1].time_input(
        "Time (UTC)", now.time().replace(second=0, microsecond=0), key="mt_cp_time"
    )
    note = st.text_area("What was done", max_chars=actions.MAX_NOTE_LENGTH, key="mt_cp_note")
    st.caption(
        "The outcome teaches the model: failed before service records the failure, fault found "
        "a failure prevented in time."
    )
    if st.form_submit_button("Complete", disabled=locked or not task_labels):
        done = min(datetime.combine(done_day, done_at, tzinfo=UTC), now)
        run_action(
            lambda: actions.complete_task(user, task_id, outcome, note, completed_at=done),
            f"Task #{task_id} completed ({outcome}).",
        )

with failure_tab, st.form("record_failure"):
    equipment_id = st.selectbox("Equipment", data.equipment_ids(), key="mt_fail_eq")
    cols = st.columns(2)
    fail_day = cols[0].date_input("Failed on", now.date(), max_value=now.date(), key="mt_fail_day")
    fail_at = cols[1].time_input(
        "Time (UTC)", now.time().replace(second=0, microsecond=0), key="mt_fail_time"
    )
    mode = st.text_input("What failed (failure mode)", max_chars=200, key="mt_fail_mode")
    repaired = st.checkbox("Running again", key="mt_fail_repaired")
    cols = st.columns(2)
    fixed_day = cols[0].date_input("Since", now.date(), max_value=now.date(), key="mt_fail_fix_day")
    fixed_at = cols[1].time_input(
        "Time (UTC) ", now.time().replace(second=0, microsecond=0), key="mt_fail_fix_time"
    )
    note = st.text_area("Notes", max_chars=actions.MAX_NOTE_LENGTH, key="mt_fail_note")
    if st.form_submit_button("Record failure", disabled=locked):
        failed_at = datetime.combine(fail_day, fail_at, tzinfo=UTC)
        repaired_at = datetime.combine(fixed_day, fixed_at, tzinfo=UTC) if repaired else None
        run_action(
            lambda: actions.record_failure(user, equipment_id, failed_at, mode, note, repaired_at),
            f"Failure of {equipment_id} at {failed_at:%Y-%m-%d %H:%M} UTC recorded.",
        )
