"""The dashboard server: streamlit_app.py, plus the routes that keep a sign-in in a cookie.

`streamlit run src/emps/dashboard/serve.py` (what `emps up` runs) finds `app` and serves it with
Streamlit's own server; emps.dashboard.session_routes sets and clears the session cookie.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where its modules (data.py,
# session.py, ui.py, ...) would shadow any top-level module of the same name.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import streamlit as st  # noqa: E402

from emps.dashboard.session_routes import routes  # noqa: E402

_base = (st.get_option("server.baseUrlPath") or "").strip("/")
app = st.App("streamlit_app.py", routes=routes(f"/{_base}" if _base else "/"))
