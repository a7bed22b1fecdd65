"""Data quality: the ingest ledger and the quarantine, with the reason for every rejected row."""

from __future__ import annotations

import streamlit as st

from emps.settings import get_settings
from streamlit_app import data
from streamlit_app.ui import require_user

require_user()
st.title("Data quality")

statuses = st.multiselect(
    "File status",
    ["claimed", "loaded", "partial", "duplicate", "quarantined", "failed"],
    key="dq_status",
)
files = data.ingest_files(tuple(statuses))
row = st.columns(4)
row[0].metric("Files shown", len(files))
row[1].metric("Rows loaded", int(files["rows_loaded"].fillna(0).sum()))
row[2].metric("Duplicate rows", int(files["rows_duplicate"].fillna(0).sum()))
row[3].metric("Quarantined rows", int(files["rows_quarantined"].fillna(0).sum()))

st.subheader("Ingest ledger")
st.dataframe(files, hide_index=True, width="stretch", key="ledger_table")

st.subheader("Quarantined rows")
quarantine = data.quarantined_rows()
if quarantine.empty:
    st.info("No row has been quarantined.")
else:
    st.dataframe(quarantine, hide_index=True, width="stretch", key="quarantine_table")

st.subheader("Validation and model documentation")
settings = get_settings()
gx_index = settings.home / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
dbt_index = settings.home.parent / "dbt_project" / "target" / "index.html"
links = st.columns(2)
if settings.gx_docs_url:
    links[0].link_button("Great Expectations Data Docs", settings.gx_docs_url)
elif gx_index.exists():
    links[0].caption(f"Great Expectations Data Docs: {gx_index}")
else:
    links[0].caption("Great Expectations Data Docs have not been built yet.")
if settings.dbt_docs_url:
    links[1].link_button("dbt docs", settings.dbt_docs_url)
elif dbt_index.exists():
    links[1].caption(f"dbt docs: {dbt_index} (serve with `dbt docs serve`)")
else:
    links[1].caption("dbt docs have not been generated yet (`dbt docs generate`).")
