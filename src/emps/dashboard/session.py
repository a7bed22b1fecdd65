"""The dashboard's sign-in session: who is signed in, on every run, from the database.

(Imported by serve.py when the server starts: what it needs of the platform is imported when
first used, so an idle dashboard stays small.)

A sign-in returns a session token (emps.users). This browser tab keeps it in st.session_state;
a reload opens a new Streamlit session, which finds it in the `emps_session` cookie instead. The
cookie is HttpOnly (page scripts cannot read it), so Streamlit, which cannot set cookies, hands
the token to the small route in serve.py: the page loads `_emps/session?code=...` with a
one-time code valid for a minute, and the route answers with Set-Cookie.

Every run asks the database who holds the token (emps.users.session_user): an idle or revoked
session, a deactivated user or a changed role takes effect on the next page load.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:
    from emps.users import User

COOKIE = "emps_session"
TOKEN_KEY = "session_token"
USER_KEY = "user"
ROUTE = "_emps/session"
SIGN_OUT_ROUTE = "_emps/sign-out"
HANDOFF_TTL_S = 60.0

# One-time codes -> (token, deadline), shared by the app's runs and serve.py's route (one process).
_handoffs: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


def handoff(token: str, now: float | None = None) -> str:
    """A one-time code the cookie route exchanges for `token` within HANDOFF_TTL_S."""
    now = time.monotonic() if now is None else now
    code = secrets.token_urlsafe(24)
    with _lock:
        for stale in [c for c, (_, deadline) in _handoffs.items() if deadline < now]:
            del _handoffs[stale]
        _handoffs[code] = (token, now + HANDOFF_TTL_S)
    return code


def claim(code: str, now: float | None = None) -> str | None:
    """The token behind a code, once; None when unknown, used or expired."""
    now = time.monotonic() if now is None else now
    with _lock:
        token, deadline = _handoffs.pop(code, (None, 0.0))
    return token if token is not None and deadline >= now else None


def client_address() -> str:
    """The browser's address, for sign-in rate limits. Behind a proxy on this host or a private
    network (the production proxy), the last X-Forwarded-For hop, which that proxy appended."""
    direct = st.context.ip_address
    forwarded = st.context.headers.get("X-Forwarded-For")
    direct = direct if isinstance(direct, str) else None
    forwarded = forwarded if isinstance(forwarded, str) else None
    try:
        from_proxy = direct is None or ipaddress.ip_address(direct).is_private
    except ValueError:
        from_proxy = False
    if forwarded and from_proxy:
        return forwarded.split(",")[-1].strip()
    return direct or "localhost"


def _cookie() -> str | None:
    value = st.context.cookies.get(COOKIE)
    return value if isinstance(value, str) else None  # AppTest's context has no real cookies


def current_user() -> User | None:
    """The user holding this session's token now (asked of the database), or None."""
    from emps.users import session_user

    token = st.session_state.get(TOKEN_KEY) or _cookie()
    user = session_user(token) if token else None
    if user is None:
        st.session_state.pop(TOKEN_KEY, None)
        st.session_state.pop(USER_KEY, None)
        return None
    st.session_state[TOKEN_KEY] = token
    st.session_state[USER_KEY] = user
    return user


def remember(user: User) -> None:
    """Keep a fresh sign-in for this tab, and have the browser store its cookie."""
    if user.token is None:
        raise ValueError(f"{user.username} has no session token: sign them in first")
    st.session_state[TOKEN_KEY] = user.token
    st.session_state[USER_KEY] = user
    st.session_state["cookie_code"] = handoff(user.token)


def sign_out() -> None:
    from emps.users import sign_out as end_session

    end_session(st.session_state.get(TOKEN_KEY) or _cookie())
    for key in (TOKEN_KEY, USER_KEY, "cookie_code"):
        st.session_state.pop(key, None)
    st.session_state["cookie_clear"] = True


def _base() -> str:
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/" if base else "/"


def render_cookie_exchange() -> None:
    """The invisible image whose request sets (or clears) the session cookie."""
    if code := st.session_state.get("cookie_code"):
        url = f"{_base()}{ROUTE}?code={code}"
    elif st.session_state.pop("cookie_clear", False):
        url = f"{_base()}{SIGN_OUT_ROUTE}"
    else:
        return
    st.html(f'<img src="{url}" alt="" width="1" height="1" style="position:absolute;opacity:0">')
