"""Alerts: filter, see how fast they were acknowledged, acknowledge and resolve with a note."""

from __future__ import annotations

import streamlit as st

from emps import actions
from emps.dashboard import data
from emps.dashboard.ui import (
    SEVERITY_ORDER,
    pick_range,
    plain,
    require_user,
    run_action,
    show_flash,
)
from emps.settings import get_settings

user = require_user()
st.title("Alerts")
show_flash()

# Mail that cannot go out cannot announce itself by mail: whoever watches this page is told.
waiting = data.notification_backlog()
if waiting.oldest_age_s > get_settings().notifications.pending_alert_s:
    st.warning(
        f"Crews may not be getting alert notifications: {waiting.waiting} waiting to be sent, "
        f"the oldest for {waiting.oldest_age_s / 60:.0f} min. `emps notify status` on the server "
        "shows the last error.",
        icon=":material/mail_lock:",
    )

filters = st.columns(4)
statuses = filters[0].multiselect(
    "Status", ["open", "acknowledged", "resolved"], default=["open", "acknowledged"], key="al_st"
)
severities = filters[1].multiselect("Severity", list(reversed(SEVERITY_ORDER)), key="al_sev")
sites = filters[2].multiselect("Site", data.sites(), key="al_sites")
with filters[3]:
    since, until = pick_range("al", default="Last 30 days")

alerts = data.alerts(tuple(statuses), tuple(severities), tuple(sites), since, until)
acked = alerts["acknowledged_at"].notna()
row = st.columns(4)
row[0].metric("Alerts shown", len(alerts))
row[1].metric("Open (unacknowledged)", int((alerts["status"] == "open").sum()))
mean_ack = alerts.loc[acked, "minutes_to_acknowledge"].astype(float).mean()
row[2].metric("Mean minutes to acknowledge", "–" if acked.sum() == 0 else f"{mean_ack:.1f}")
resolved = alerts["minutes_to_resolve"].dropna().astype(float)
row[3].metric("Mean minutes to resolve", f"{resolved.mean():.1f}" if len(resolved) else "–")

st.dataframe(
    alerts,
    hide_index=True,
    width="stretch",
    key="alerts_table",
    column_config={
        "alert_id": st.column_config.NumberColumn("Alert", format="%d"),
        "equipment_id": "Equipment",
        "equipment_type": "Type",
        "site": "Site",
        "severity": "Severity",
        "status": "Status",
        "message": st.column_config.TextColumn("Message", width="large"),
        "created_at": st.column_config.DatetimeColumn("Raised", format="D MMM HH:mm"),
        "acknowledged_at": st.column_config.DatetimeColumn("Acknowledged", format="D MMM HH:mm"),
        "acknowledged_by": "By",
        "resolved_at": st.column_config.DatetimeColumn("Resolved", format="D MMM HH:mm"),
        "resolved_by": "Resolved by",
        "resolution_note": "Note",
        "escalation_level": "Escalation",
        "minutes_to_acknowledge": st.column_config.NumberColumn(
            "Min. to ack", help="Still open: minutes since it was raised", format="%.1f"
        ),
        "minutes_to_resolve": st.column_config.NumberColumn("Min. to resolve", format="%.1f"),
    },
)

st.subheader("Act on an alert")
actionable = alerts[alerts["status"] != "resolved"]
if not user.role.can_act:
    st.caption(
        f"You are signed in as a {plain(user.role.value)}: only Technicians and Admins can "
        "acknowledge or resolve alerts."
    )
if actionable.empty:
    st.info("No open or acknowledged alert matches the filters.")
    st.stop()
labels = {
    int(r.alert_id): f"#{r.alert_id} {r.severity} {r.equipment_id} ({r.status})"
    for r in actionable.itertuples()
}
with st.form("alert_action"):
    alert_id = st.selectbox("Alert", list(labels), format_func=labels.__getitem__, key="al_pick")
    note = st.text_area("Note", max_chars=actions.MAX_NOTE_LENGTH, key="al_note")
    buttons = st.columns(2)
    acknowledge = buttons[0].form_submit_button("Acknowledge", disabled=not user.role.can_act)
    resolve = buttons[1].form_submit_button("Resolve", disabled=not user.role.can_act)
if acknowledge or resolve:
    act = actions.acknowledge_alert if acknowledge else actions.resolve_alert
    run_action(
        lambda: act(user, alert_id, note),
        f"Alert #{alert_id} {'acknowledged' if acknowledge else 'resolved'}.",
    )
