"""Your account: who you are signed in as, and your password."""

from __future__ import annotations

import streamlit as st

from emps.dashboard import session
from emps.dashboard.ui import change_password_form, plain, require_user, show_flash

user = require_user()
st.title("Account")
show_flash()
st.write(f"Signed in as **{plain(user.username)}**, {plain(user.role.value)}.")
st.subheader("Change password")
change_password_form(user, session.client_address())
