"""Fixtures of the alert tests: a real aiosmtpd mailbox on a free port (plain, or with STARTTLS
and login under a CA of the tests' own), settings pointing at it, a small crew, a local SMS
gateway (http or https) and a clock the test moves (the helpers that write rows are in
alert_testdata.py)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from emps.alerting.mailbox import MailboxHandler, start_sink
from emps.alerting.recipients import Recipient, RecipientsConfig
from emps.processes import free_port
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
def test_ca() -> trustme.CA:
    """A certificate authority of the tests' own, trusted through EMPS_NOTIFY_CA_FILE."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(test_ca: trustme.CA, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    test_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls(test_ca: trustme.CA) -> ssl.SSLContext:
    """A server TLS context with a certificate for 127.0.0.1 and localhost, signed by test_ca."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


class RecordingMailbox(MailboxHandler):
    """A mailbox that also records whether each message arrived over TLS, and every login."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.over_tls: list[bool] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.over_tls.append(session.ssl is not None)
        return await super().handle_DATA(server, session, envelope)


def _authenticator(handler: RecordingMailbox):
    from aiosmtpd.smtp import AuthResult

    def authenticator(server, session, envelope, mechanism, auth_data):
        handler.logins.append(auth_data.login)
        ok = auth_data.login == b"emps" and auth_data.password == b"right"
        return AuthResult(success=ok, handled=False)

    return authenticator


@pytest.fixture
def auth_mailbox(tmp_path: Path, server_tls) -> Iterator[tuple[RecordingMailbox, int]]:
    """An SMTP sink offering STARTTLS (certificate from test_ca) and requiring login emps /
    right once the connection is encrypted."""
    from aiosmtpd.controller import Controller

    handler = RecordingMailbox(tmp_path / "auth-mailbox")
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        authenticator=_authenticator(handler),
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def clear_auth_mailbox(tmp_path: Path) -> Iterator[tuple[RecordingMailbox, int]]:
    """An SMTP sink without STARTTLS that offers AUTH in clear text (as some old relays do)."""
    from aiosmtpd.controller import Controller

    handler = RecordingMailbox(tmp_path / "clear-mailbox")
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator(handler),
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield handler, port
    controller.stop()


class ManualClock:
    """A clock the test moves forward (the outbox's `clock`), starting at the real time."""

    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def alert_settings(db: Settings, mailbox, tmp_path: Path) -> Settings:
    """The test database's settings with SMTP at the sink and no wait between retries."""
    _, port = mailbox
    return db.replace(
        home=tmp_path,
        notifications={"smtp_port": port, "backoff_s": 0.0, "outage_retry_s": 0.0},
        dashboard={"base_url": "http://dash.test"},
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


def _gateway(tls: ssl.SSLContext | None = None) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _GatewayHandler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.requests = []
    server.fail_next = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sms_gateway() -> Iterator[ThreadingHTTPServer]:
    """A local HTTP SMS gateway recording each request (`.requests`); `.fail_next` answers 503."""
    yield from _gateway()


@pytest.fixture
def https_sms_gateway(server_tls) -> Iterator[ThreadingHTTPServer]:
    """The same gateway over https, its certificate signed by test_ca."""
    yield from _gateway(server_tls)
