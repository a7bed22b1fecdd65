"""Fixtures of the alert tests: a real aiosmtpd mailbox on a free port, settings pointing at it,
a small crew and a local SMS gateway (the helpers that write rows are in alert_testdata.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ports import free_port

from emps.alerting.mailbox import MailboxHandler, start_sink
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.settings import Settings


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[tuple[MailboxHandler, int]]:
    """A running SMTP sink that refuses refused@crews.example; yields (handler, port)."""
    port = free_port()
    controller, handler = start_sink(
        tmp_path / "mailbox", port=port, refuse={"refused@crews.example"}
    )
    yield handler, port
    controller.stop()


@pytest.fixture(scope="session")
def dashboard_marts(database: Settings) -> Settings:
    """The marts the fleet report reads, built by the dbt project once a session (the report
    here needs no prediction, so the tables under the views are not refreshed per test)."""
    from emps.queries import DASHBOARD_MARTS
    from emps.transform import dbt_args, run_dbt

    selection = [f"+{mart}" for mart in DASHBOARD_MARTS]
    summary = run_dbt(dbt_args(["run"], database, select=selection), database)
    assert summary.success, summary.describe_failures()
    return database


@pytest.fixture
def auth_mailbox(tmp_path: Path) -> Iterator[tuple[MailboxHandler, int]]:
    """An SMTP sink that requires login emps / right (AUTH without TLS: loopback only)."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"emps" and auth_data.password == b"right"
        return AuthResult(success=ok, handled=False)

    handler = MailboxHandler(tmp_path / "auth-mailbox")
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def alert_settings(db: Settings, mailbox, tmp_path: Path) -> Settings:
    """The test database's settings with SMTP at the sink and no backoff between retries."""
    _, port = mailbox
    return db.model_copy(
        update={
            "smtp_port": port,
            "notify_backoff_s": 0.0,
            "home": tmp_path,
            "dashboard_base_url": "http://dash.test",
        }
    )


@pytest.fixture
def crew() -> RecipientsConfig:
    return RecipientsConfig(
        people=(
            Recipient("Alpha techs", "technician", ("ALPHA",), "alpha@crews.example"),
            Recipient("Alpha tech 2", "technician", ("ALPHA",), "alpha2@crews.example"),
            Recipient("Bravo techs", "technician", ("BRAVO",), "bravo@crews.example"),
            Recipient("Supervisor", "supervisor", ("*",), "boss@crews.example"),
            Recipient("Manager", "manager", ("*",), "manager@crews.example"),
        ),
        escalation=("technician", "supervisor", "manager"),
    )


class _GatewayHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server = self.server
        server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), **body}
        )
        status = 503 if server.fail_next > 0 else 200
        server.fail_next = max(server.fail_next - 1, 0)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def sms_gateway() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP SMS gateway recording each request (`.requests`); `.fail_next` answers 503."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _GatewayHandler)
    server.requests = []
    server.fail_next = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
