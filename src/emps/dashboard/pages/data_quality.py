"""Data quality: the ingest ledger, conflicting re-sends, the quarantine with the reason for every
rejected row, entries never ingested, and the platform's open operations alerts. Admins accept or
dismiss conflicts and ask for quarantined rows to be retried; every such decision is audited."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from emps import actions
from emps.dashboard import data
from emps.dashboard.ui import flash, plain, require_user, show_flash
from emps.settings import get_settings

user = require_user()
st.title("Data quality")
show_flash()

alerts = data.operations_alerts()
if not alerts.empty:
    st.subheader("Operations alerts")
    for alert in alerts.itertuples():
        st.warning(
            f"**{plain(alert.rule)}** ({plain(alert.subject)}): {plain(alert.summary)}; "
            f"open since {alert.opened_at:%Y-%m-%d %H:%M} UTC"
        )

statuses = st.multiselect(
    "File status",
    ["claimed", "loaded", "partial", "duplicate", "conflict", "quarantined", "failed"],
    key="dq_status",
)
files = data.ingest_files(tuple(statuses))
row = st.columns(5)
row[0].metric("Files shown", len(files))
row[1].metric("Rows loaded", int(files["rows_loaded"].fillna(0).sum()))
row[2].metric("Duplicate rows", int(files["rows_duplicate"].fillna(0).sum()))
row[3].metric("Quarantined rows", int(files["rows_quarantined"].fillna(0).sum()))
row[4].metric("Conflicting rows", int(files["rows_conflict"].fillna(0).sum()))

st.subheader("Ingest ledger")
st.dataframe(files, hide_index=True, width="stretch", key="ledger_table")


def both_versions(conflicts: pd.DataFrame) -> pd.DataFrame:
    """One row per conflict, each reading value received next to the stored one."""
    rows = []
    for conflict in conflicts.itertuples():
        received, stored = conflict.received or {}, conflict.stored or {}
        row = {
            "id": conflict.id,
            "equipment_id": conflict.equipment_id,
            "reading_time": conflict.reading_time,
            "file": conflict.file_name,
        }
        for name in [*received, *(k for k in stored if k not in received)]:
            row[f"{name} received"] = received.get(name)
            row[f"{name} stored"] = stored.get(name)
        rows.append(row)
    return pd.DataFrame(rows)


st.subheader("Conflicting re-sends")
st.caption(
    "A reading re-sent for a stored equipment and time with other values. The stored reading "
    "stays until an admin accepts the received one; accepting rebuilds the features of the "
    "window it feeds and rescores it."
)
conflicts = data.conflicts()
if conflicts.empty:
    st.info("No conflict waits for review.")
else:
    st.dataframe(both_versions(conflicts), hide_index=True, width="stretch", key="conflict_table")
    if user.role.can_administer:
        with st.form("conflict_form"):
            chosen = st.selectbox("Conflict", conflicts["id"].tolist(), key="dq_conflict")
            note = st.text_input("Note (kept in the audit log)", key="dq_conflict_note")
            accept, keep = st.columns(2)
            accepted = accept.form_submit_button("Accept the received reading")
            kept = keep.form_submit_button("Keep the stored reading")
        if accepted or kept:
            try:
                if accepted:
                    actions.accept_conflict(user, int(chosen), note)
                    flash(
                        f"Conflict {chosen} accepted: the window is rebuilt at the next ingest run."
                    )
                else:
                    actions.dismiss_conflict(user, int(chosen), note)
                    flash(f"Conflict {chosen} dismissed: the stored reading stays.")
            except (actions.ActionFailed, actions.NotAllowed) as exc:
                st.error(str(exc))
            else:
                data.clear()
                st.rerun()

st.subheader("Quarantined rows")
kinds = st.multiselect(
    "Kind", ["invalid", "malformed", "unterminated"], key="dq_kind", help="Conflicts are above"
)
open_only = st.toggle("Only rows still in quarantine", value=False, key="dq_open_only")
quarantine = data.quarantined_rows(tuple(kinds), open_only)
if quarantine.empty:
    st.info("No row has been quarantined.")
else:
    st.dataframe(quarantine, hide_index=True, width="stretch", key="quarantine_table")
    retryable = quarantine.loc[
        quarantine["resolution"].isna() & quarantine["retry_requested_by"].isna(), "id"
    ].tolist()
    if user.role.can_administer and retryable:
        with st.form("retry_form"):
            picked = st.multiselect(
                "Rows to validate again at the next ingest run (after registering their "
                "equipment, say; a row the file ended inside is taken as it is)",
                retryable,
                key="dq_retry_rows",
            )
            note = st.text_input("Note (kept in the audit log)", key="dq_retry_note")
            retry = st.form_submit_button("Retry these rows")
        if retry and picked:
            try:
                queued = actions.retry_quarantined(user, picked, note)
            except (actions.ActionFailed, actions.NotAllowed) as exc:
                st.error(str(exc))
            else:
                flash(f"{queued} row(s) will be validated again at the next ingest run.")
                data.clear()
                st.rerun()

ignored = data.landing_ignored()
if not ignored.empty:
    st.subheader("Never ingested")
    st.caption(
        "Entries of landing/incoming that ingest does not claim (temporary names, links, "
        "anything but a regular file), left there long enough to look forgotten."
    )
    st.dataframe(ignored, hide_index=True, width="stretch", key="ignored_table")

st.subheader("Validation and model documentation")
settings = get_settings()
gx_index = settings.home / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
dbt_index = settings.home.parent / "dbt_project" / "target" / "index.html"
links = st.columns(2)
if settings.dashboard.gx_docs_url:
    links[0].link_button("Great Expectations Data Docs", settings.dashboard.gx_docs_url)
elif gx_index.exists():
    links[0].caption(f"Great Expectations Data Docs: {gx_index}")
else:
    links[0].caption("Great Expectations Data Docs have not been built yet.")
if settings.dashboard.dbt_docs_url:
    links[1].link_button("dbt docs", settings.dashboard.dbt_docs_url)
elif dbt_index.exists():
    links[1].caption(f"dbt docs: {dbt_index} (serve with `dbt docs serve`)")
else:
    links[1].caption("dbt docs have not been generated yet (`dbt docs generate`).")
