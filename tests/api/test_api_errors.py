"""An unexpected error in a route is logged with its traceback and answered with its id."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from emps.api.app import create_app


def test_a_bug_in_a_route_is_a_500_with_the_request_id_and_a_logged_traceback(database, caplog):
    """A route that raises: the client gets 500 with the request id it can quote, and the
    API's log holds the traceback under that id."""
    app = create_app(database)

    @app.get("/test/broken")
    async def broken() -> None:
        raise RuntimeError("a bug the tests planted")

    with caplog.at_level(logging.ERROR, logger="emps.api"):
        response = TestClient(app, raise_server_exceptions=False).get(
            "/test/broken", headers={"X-Request-ID": "req-broken-1"}
        )
    assert response.status_code == 500
    assert response.json()["request_id"] == "req-broken-1"
    assert response.headers["X-Request-ID"] == "req-broken-1"
    failed = [r for r in caplog.records if "GET /test/broken failed" in r.getMessage()]
    assert failed and "a bug the tests planted" in str(failed[0].exc_info[1])
