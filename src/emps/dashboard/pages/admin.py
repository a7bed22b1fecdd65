"""Admin: users and roles, alert thresholds, and the audit trail."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from emps import actions, queries
from emps.dashboard import data
from emps.dashboard.ui import plain, require_user, run_action, show_flash
from emps.domain import Severity
from emps.settings import get_settings

BAND_KEYS = tuple(band.threshold_key for band in Severity.banded())

user = require_user()
st.title("Administration")
show_flash()
if not user.role.can_administer:  # the router hides this page too; this is the real check
    st.error("Only Admins can manage users and thresholds.")
    st.stop()


st.subheader("Users")
st.dataframe(queries.users(), hide_index=True, width="stretch", key="users_table")
with st.form("save_user"):
    cols: Sequence[DeltaGenerator] = st.columns(3)
    username = cols[0].text_input("User name", key="ad_username")
    role = cols[1].selectbox("Role", ["Viewer", "Technician", "Admin"], key="ad_role")
    display_name = cols[2].text_input("Display name", key="ad_display")
    cols = st.columns([2, 1])
    password = cols[0].text_input(
        "Password (blank keeps the current one)",
        type="password",
        key="ad_password",
        help="A password you set for someone else is temporary: they choose their own at their "
        "next sign-in.",
    )
    active = cols[1].checkbox("Active", value=True, key="ad_active")
    if st.form_submit_button("Save user"):
        run_action(
            lambda: actions.save_user(user, username, role, display_name, password or None, active),
            f"User {username.strip().lower()} saved.",
        )

with st.form("revoke_sessions"):
    cols = st.columns([2, 1])
    revoke_name = cols[0].text_input(
        "End every session and API token of", key="ad_revoke", help="A lost laptop, a leaked token"
    )
    if cols[1].form_submit_button("Sign them out"):
        run_action(
            lambda: actions.revoke_sessions(user, revoke_name),
            f"Sessions and tokens of {revoke_name.strip().lower()} ended.",
        )

st.subheader("Thresholds")
st.caption(
    "Severity bands of failure probability and when equipment counts as silent. The next "
    "scoring run bands predictions with them, so HIGH and CRITICAL alerts follow; charts and "
    "reports draw them. Until set here they follow EMPS_SEVERITY_* and EMPS_SILENT_MINUTES. "
    "MLflow reports each model's recall and precision at its own operating threshold (the "
    "version tag `threshold`; by default where it reaches precision 0.80 on training data), "
    "usually below HIGH: alerting at HIGH trades some recall for fewer false alarms."
)
current = queries.thresholds_table()
saved = {row.key: float(row.value) for row in current.itertuples()}
values = {}
cols = st.columns(max(len(current), 1))
for col, row in zip(cols, current.itertuples(), strict=False):
    values[row.key] = col.number_input(
        row.key.replace("_", " "),
        value=float(row.value),
        step=0.05 if row.key.startswith("severity") else 1.0,
        help=row.description,
        key=f"th_{row.key}",
    )
changed = {k: v for k, v in values.items() if v != saved.get(k)}


def _preview() -> None:
    """What the champion would have done over the last weeks with the bands typed in, next to
    the bands in force (the replay is shared: only the banding differs)."""
    weeks = get_settings().ml.backtest_weeks
    now = datetime.now(UTC)
    window = data.backtest_window(now - timedelta(weeks=weeks), now)
    in_force = data.bands_in_force()
    medium, high, critical = (
        values.get(key, value) for key, value in zip(BAND_KEYS, in_force, strict=True)
    )
    typed = (medium, high, critical)
    current_figures, why = data.backtest(*window, in_force)
    if current_figures is None:
        st.caption(f"No backtest of these bands: {plain(why)}")
        return
    if current_figures.rows == 0:
        st.caption(f"No backtest of these bands: no feature rows in the last {weeks} weeks.")
        return
    cols = st.columns(2)
    cols[0].markdown(f"With the current bands, last {weeks} weeks: **{current_figures.summary()}**")
    if typed == in_force:
        cols[1].caption("Change a severity band to see what it would have done.")
        return
    if not typed[0] < typed[1] < typed[2]:
        cols[1].warning("Severity bands must rise: medium < high < critical.")
        return
    proposed, _ = data.backtest(*window, typed)
    cols[1].markdown(f"With these bands, last {weeks} weeks: **{proposed.summary()}**")


_preview()
st.caption(
    "The backtest replays the champion over the stored history with each set of bands; "
    "an alert is an episode at HIGH or above, warned means the first alert came at least the "
    "inspection lead ahead."
)
if st.button("Save thresholds", key="th_save"):

    def save() -> None:
        # Raise the upper bands first so the ordering check holds at every step.
        for key in sorted(changed, key=lambda k: -changed[k]):
            actions.set_threshold(user, key, changed[key])

    run_action(save, f"{len(changed)} threshold(s) saved.")

st.subheader("Audit log")
st.dataframe(queries.audit_log(), hide_index=True, width="stretch", key="audit_table")

st.subheader("Archived records")
archived = queries.archived_records()
where = get_settings().records_dir
if archived.empty:
    st.caption(
        "Nothing archived yet. The nightly retention moves resolved alerts with their "
        "notifications, old audit entries and quarantined rows to compressed files under "
        f"{where} (docs/operations.md lists every retention)."
    )
else:
    st.caption(
        f"Rows retention took out of the database, as gzipped JSON lines under {where}/<kind>/ "
        "(one object per row; `zcat FILE | jq` reads them)."
    )
    st.dataframe(archived, hide_index=True, width="stretch", key="archived_table")
