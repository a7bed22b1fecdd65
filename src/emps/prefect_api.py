"""Talking to the Prefect server's REST API with its credentials, without importing Prefect.

The platform's Prefect server requires its auth string (HTTP basic) on every request and a CSRF
token on every state-changing one (PREFECT_SERVER_API_AUTH_STRING, _CSRF_PROTECTION_ENABLED).
Prefect's own client handles both; the small always-on parts of `emps up` (the landing watcher,
the metrics endpoint, the start-up checks) use this httpx client instead of importing Prefect.
The credential comes from PREFECT_API_AUTH_STRING (or PREFECT_API_KEY for Prefect Cloud), as
for every Prefect client.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator

import httpx

from emps.credentials import basic_auth_header

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class PrefectAuth(httpx.Auth):
    """Basic auth on every request; a CSRF token fetched on first need and again on expiry."""

    def __init__(self, api: str, auth_string: str | None, api_key: str | None = None):
        self.api = api.rstrip("/")
        self.header = (
            basic_auth_header(auth_string)
            if auth_string
            else (f"Bearer {api_key}" if api_key else None)  # Prefect Cloud
        )
        self.client_id = str(uuid.uuid4())
        self.csrf_token: str | None = None
        self.csrf_enabled = True

    def _sign(self, request: httpx.Request) -> None:
        if self.header:
            request.headers["Authorization"] = self.header
        if request.method in CHANGES and self.csrf_token:
            request.headers["Prefect-Csrf-Token"] = self.csrf_token
            request.headers["Prefect-Csrf-Client"] = self.client_id

    def _token_request(self) -> httpx.Request:
        request = httpx.Request("GET", f"{self.api}/csrf-token", params={"client": self.client_id})
        if self.header:
            request.headers["Authorization"] = self.header
        return request

    def _take_token(self, response: httpx.Response) -> None:
        if response.status_code == 422 and "disabled" in response.text:
            self.csrf_enabled = False  # a server without CSRF protection
            return
        response.raise_for_status()
        self.csrf_token = response.json()["token"]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.method in CHANGES and self.csrf_enabled and self.csrf_token is None:
            token_response = yield self._token_request()
            token_response.read()
            self._take_token(token_response)
        self._sign(request)
        response = yield request
        if (
            request.method in CHANGES
            and self.csrf_enabled
            and response.status_code == 403
            and "CSRF" in response.read().decode(errors="replace")
        ):
            token_response = yield self._token_request()
            token_response.read()
            self._take_token(token_response)
            self._sign(request)
            yield request


def client(
    api: str | None = None, auth_string: str | None = None, timeout: float = 30
) -> httpx.Client:
    """An httpx client for the Prefect API at `api` (default PREFECT_API_URL), authenticated with
    `auth_string` (default PREFECT_API_AUTH_STRING). Use it as a context manager."""
    api = (api or os.environ.get("PREFECT_API_URL") or "").rstrip("/")
    if not api:
        raise RuntimeError("PREFECT_API_URL is not set: where is the Prefect server?")
    auth_string = (
        auth_string if auth_string is not None else os.environ.get("PREFECT_API_AUTH_STRING")
    )
    auth = PrefectAuth(api, auth_string, os.environ.get("PREFECT_API_KEY"))
    return httpx.Client(base_url=api, auth=auth, timeout=timeout)
