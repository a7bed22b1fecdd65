"""The dashboard server's cookie routes: a one-time code becomes a private session cookie."""

from __future__ import annotations

import time

from starlette.applications import Starlette
from starlette.testclient import TestClient

from emps.dashboard import session
from emps.dashboard.session_routes import routes

SAME_SITE = {"Sec-Fetch-Site": "same-origin"}


def _client() -> TestClient:
    return TestClient(Starlette(routes=routes("/", max_age_s=3600)))


def test_a_code_sets_an_httponly_strict_cookie_once():
    """A fresh code gives the session cookie (HttpOnly, SameSite=Strict, for the whole site);
    the same code a second time gives nothing."""
    client = _client()
    code = session.handoff("the-token")
    first = client.get(f"/{session.ROUTE}", params={"code": code}, headers=SAME_SITE)
    assert first.status_code == 204
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"{session.COOKIE}=the-token;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback
    again = client.get(f"/{session.ROUTE}", params={"code": code}, headers=SAME_SITE)
    assert again.status_code == 404 and "set-cookie" not in again.headers


def test_the_cookie_is_secure_behind_an_https_proxy():
    """Behind the TLS proxy (X-Forwarded-Proto: https) the cookie is sent over HTTPS only."""
    code = session.handoff("the-token")
    response = _client().get(
        f"/{session.ROUTE}",
        params={"code": code},
        headers={**SAME_SITE, "X-Forwarded-Proto": "https"},
    )
    assert "Secure" in response.headers["set-cookie"]


def test_an_expired_or_cross_site_code_sets_nothing():
    """A code older than a minute, or a request another site made the browser send, sets no
    cookie (and the cross-site request does not use the code up)."""
    client = _client()
    old = session.handoff("old-token", now=time.monotonic() - session.HANDOFF_TTL_S - 1)
    assert (
        client.get(f"/{session.ROUTE}", params={"code": old}, headers=SAME_SITE).status_code == 404
    )
    code = session.handoff("the-token")
    planted = client.get(
        f"/{session.ROUTE}", params={"code": code}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert planted.status_code == 403 and "set-cookie" not in planted.headers
    assert (
        client.get(f"/{session.ROUTE}", params={"code": code}, headers=SAME_SITE).status_code == 204
    )
    cleared = client.get(f"/{session.SIGN_OUT_ROUTE}", headers=SAME_SITE)
    assert cleared.status_code == 204 and 'emps_session=""' in cleared.headers["set-cookie"]
