"""A local SMTP sink (aiosmtpd) that keeps each message once, as .eml, in <EMPS_HOME>/mailbox.

Messages are stored under a name derived from their Message-ID, so a message delivered twice
(a sender crashed after the server accepted it and before recording it as sent) is kept once.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from aiosmtpd.controller import Controller

from emps.settings import Settings


class MailboxHandler:
    """aiosmtpd handler: one file per distinct Message-ID; counts every DATA it accepts."""

    def __init__(self, directory: Path, refuse: set[str] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.refuse = {r.lower() for r in refuse or set()}
        self.accepted = 0
        self.stored = 0
        self.received: Counter[str] = Counter()  # Message-ID -> times accepted
        self._lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.lower() in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        msg = email.message_from_bytes(data, policy=email.policy.default)
        key = msg.get("Message-ID") or hashlib.sha256(data).hexdigest()
        name = hashlib.sha256(key.strip().encode()).hexdigest()[:32] + ".eml"
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        with self._lock:
            self.accepted += 1
            self.received[key.strip()] += 1
            try:
                # link() fails if the name exists: a second copy of the same message is not kept.
                os.link(tmp, self.directory / name)
                self.stored += 1
            except FileExistsError:
                pass
            finally:
                os.unlink(tmp)
        return "250 Message accepted for delivery"


def start_sink(
    directory: Path, host: str = "127.0.0.1", port: int = 8025, **handler_kwargs
) -> tuple[Controller, MailboxHandler]:
    """Start the sink in a background thread; call .stop() on the controller to end it."""
    handler = MailboxHandler(directory, **handler_kwargs)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    return controller, handler


SINK_HOST = "127.0.0.1"


def sink_port(settings: Settings) -> int | None:
    """The port `emps up` runs its SMTP sink on (always on 127.0.0.1), or None for no sink:
    EMPS_SMTP_SINK is off, or EMPS_SMTP_HOST is not 127.0.0.1 / localhost (a real relay, whose
    mail a local sink must never capture)."""
    if not settings.notifications.smtp_sink or settings.notifications.smtp_host.lower() not in (
        SINK_HOST,
        "localhost",
    ):
        return None
    return settings.notifications.smtp_port


@dataclass(frozen=True)
class StoredMail:
    path: Path
    message_id: str
    to: str
    subject: str
    date: str


def list_mailbox(directory: Path) -> list[StoredMail]:
    """The messages in the mailbox, oldest first."""
    directory = Path(directory)
    if not directory.exists():
        return []
    mails = []
    for path in sorted(directory.glob("*.eml"), key=lambda p: p.stat().st_mtime):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        mails.append(
            StoredMail(
                path,
                str(msg.get("Message-ID", "")),
                str(msg.get("To", "")),
                str(msg.get("Subject", "")),
                str(msg.get("Date", "")),
            )
        )
    return mails


def read_mail(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(Path(path).read_bytes(), policy=email.policy.default)
