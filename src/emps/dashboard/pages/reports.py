"""Reports: a fleet, site or equipment report for a date range, as PDF and CSV."""

from __future__ import annotations

import streamlit as st

from emps.dashboard import data
from emps.dashboard.ui import pick_range, plain, require_user
from emps.reports import ReportError, ReportScope, ScopeKind, build_report

SCOPE_KINDS: list[ScopeKind] = ["fleet", "site", "equipment"]

require_user()
st.title("Reports")

cols = st.columns(2)
kind = cols[0].radio("Scope", SCOPE_KINDS, horizontal=True, key="rp_kind")
target = None
if kind == "site":
    target = cols[1].selectbox("Site", data.sites(), key="rp_site")
elif kind == "equipment":
    target = cols[1].selectbox("Equipment", data.equipment_ids(), key="rp_equipment")
start, end = pick_range("rp", default="Last 7 days")

if st.button("Generate report", type="primary", key="rp_generate"):
    try:
        with st.spinner("Building the report…"):
            report = build_report(ReportScope(kind, target), start, end)
            st.session_state["report"] = {
                "title": report.title,
                "period": report.period,
                "summary": report.summary(),
                "pdf": report.pdf_bytes(),
                "csv": report.csv_bytes(),
                "pdf_name": report.filename("pdf"),
                "csv_name": report.filename("csv"),
                "rows": len(report.equipment),
            }
    except ReportError as exc:
        st.error(plain(exc))

if built := st.session_state.get("report"):
    st.subheader(built["title"])
    st.caption(f"{built['period']} · {built['rows']} equipment")
    downloads = st.columns(2)
    downloads[0].download_button(
        "Download PDF", built["pdf"], built["pdf_name"], "application/pdf", key="rp_pdf"
    )
    downloads[1].download_button(
        "Download CSV", built["csv"], built["csv_name"], "text/csv", key="rp_csv"
    )
    st.dataframe(
        [{"figure": k.replace("_", " "), "value": v} for k, v in built["summary"].items()],
        hide_index=True,
    )
