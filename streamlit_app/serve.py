"""The dashboard server: streamlit_app.py, plus the route that stores a sign-in as a cookie.

`streamlit run streamlit_app/serve.py` (what `emps up` runs) finds `app` and serves it: Streamlit
cannot set cookies from a script, so a signed-in page fetches `/_emps/session?code=...` and this
route answers with the session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS).
`/_emps/sign-out` clears it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts this file's folder first on sys.path, where streamlit_app.py would shadow
# the `streamlit_app` package imported below.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import streamlit as st  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402
from starlette.routing import Route  # noqa: E402

from streamlit_app import session  # noqa: E402


def _secure(request: Request) -> bool:
    proto = request.headers.get("X-Forwarded-Proto", request.url.scheme)
    return proto.split(",")[0].strip() == "https"


def _cookie_path() -> str:
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else "/"


async def store_session(request: Request) -> Response:
    """Exchange a one-time code for the session cookie."""
    from emps.settings import get_settings

    token = session.claim(request.query_params.get("code", ""))
    if token is None:
        return Response(status_code=404, headers={"Cache-Control": "no-store"})
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(
        session.COOKIE,
        token,
        max_age=get_settings().session_max_s,
        path=_cookie_path(),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


async def clear_session(request: Request) -> Response:
    """Forget the session cookie (the session itself was ended in the database)."""
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(
        session.COOKIE,
        path=_cookie_path(),
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


_prefix = _cookie_path().rstrip("/")
app = st.App(
    "streamlit_app.py",
    routes=[
        Route(f"{_prefix}/{session.ROUTE}", store_session, methods=["GET"]),
        Route(f"{_prefix}/{session.SIGN_OUT_ROUTE}", clear_session, methods=["GET"]),
    ],
)
