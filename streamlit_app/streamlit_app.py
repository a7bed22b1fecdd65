"""EMPS command dashboard: routes to the pages, behind a sign-in gate. Run with `streamlit run`."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where this file would shadow the
# `streamlit_app` package the pages import from.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import streamlit as st  # noqa: E402

from emps.users import authenticate  # noqa: E402
from streamlit_app import data  # noqa: E402
from streamlit_app.ui import current_user, plain  # noqa: E402

st.set_page_config(
    page_title="EMPS fleet health", page_icon=":material/precision_manufacturing:", layout="wide"
)

overview = st.Page(
    "pages/overview.py", title="Fleet overview", icon=":material/dashboard:", default=True
)
equipment = st.Page(
    "pages/equipment.py",
    title="Equipment",
    icon=":material/precision_manufacturing:",
    url_path="equipment",
)
pages = [
    overview,
    equipment,
    st.Page(
        "pages/alerts.py", title="Alerts", icon=":material/notifications_active:", url_path="alerts"
    ),
    st.Page(
        "pages/maintenance.py", title="Maintenance", icon=":material/build:", url_path="maintenance"
    ),
    st.Page(
        "pages/analytics.py", title="Analytics", icon=":material/monitoring:", url_path="analytics"
    ),
    st.Page(
        "pages/data_quality.py",
        title="Data quality",
        icon=":material/fact_check:",
        url_path="data_quality",
    ),
    st.Page("pages/reports.py", title="Reports", icon=":material/description:", url_path="reports"),
]
user = current_user()
if user is not None and user.role.can_administer:
    pages.append(
        st.Page(
            "pages/admin.py",
            title="Admin",
            icon=":material/admin_panel_settings:",
            url_path="admin",
        )
    )

# Built before sign-in too, so a deep link (/equipment?equipment=GEN-0001) survives signing in.
page = st.navigation(pages, position="sidebar")


def sign_in_form() -> None:
    st.title("EMPS — sign in")
    with st.form("sign_in"):
        username = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        signed_in = authenticate(username, password)
        if signed_in is None:
            st.error("Unknown user name or wrong password.")
        else:
            st.session_state["user"] = signed_in
            st.rerun()


def sidebar() -> None:
    with st.sidebar:
        st.caption(f"Signed in as {plain(user.label)}")
        if st.button("↻ Refresh data", help="Cached figures are refreshed every few minutes"):
            data.clear()
            st.rerun()
        if st.button("Sign out"):
            del st.session_state["user"]
            st.rerun()


if user is None:
    sign_in_form()
elif page is overview and st.query_params.get("equipment"):
    # `?equipment=ID` on the landing page opens that equipment.
    st.switch_page(equipment, query_params={"equipment": st.query_params["equipment"]})
else:
    sidebar()
    page.run()
