"""EMPS command dashboard: routes to the pages, behind a sign-in gate. Served by serve.py
(`streamlit run src/emps/dashboard/serve.py`), which adds the session-cookie route."""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where its modules (data.py,
# session.py, ui.py, ...) would shadow any top-level module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import streamlit as st  # noqa: E402

from emps.dashboard import data, session  # noqa: E402
from emps.dashboard.ui import change_password_form, plain  # noqa: E402
from emps.users import SignInThrottled, User, sign_in  # noqa: E402

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
# Who is signed in, asked of the database on every run: an ended session, a deactivated user or
# a new role shows at once.
user = session.current_user()
if user is not None:
    pages.append(
        st.Page("pages/account.py", title="Account", icon=":material/person:", url_path="account")
    )
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
# (Hidden until the user may see the pages: signed in, with a password of their own.)
signed_in = user is not None and not user.must_change_password
page = st.navigation(pages, position="sidebar" if signed_in else "hidden")


def sign_in_form() -> None:
    st.title("EMPS — sign in")
    with st.form("sign_in"):
        username = st.text_input("User name")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        try:
            signed_in = sign_in(username, password, client=session.client_address())
        except SignInThrottled as exc:
            st.error(plain(exc))
            return
        if signed_in is None:
            st.error("Unknown user name or wrong password.")
        else:
            session.remember(signed_in)
            st.rerun()


def first_password(user: User) -> None:
    st.title("Choose your password")
    st.info(
        f"{plain(user.display_name or user.username)}, the password you signed in with was set "
        "for you. Choose your own before going on."
    )
    change_password_form(user, session.client_address())


def sidebar(user: User) -> None:
    with st.sidebar:
        st.caption(f"Signed in as {plain(user.label)}")
        if st.button("↻ Refresh data", help="Cached figures are refreshed every few minutes"):
            data.clear()
            st.rerun()
        if st.button("Sign out"):
            session.sign_out()
            st.rerun()


session.render_cookie_exchange()
if user is None:
    sign_in_form()
elif user.must_change_password:
    first_password(user)
elif page is overview and st.query_params.get("equipment"):
    # `?equipment=ID` on the landing page opens that equipment.
    st.switch_page(equipment, query_params={"equipment": st.query_params["equipment"]})
else:
    sidebar(user)
    page.run()
