"""Email delivery over SMTP (aiosmtplib): one connection per batch, TLS and login from settings.

Every message carries a Message-ID derived from its outbox dedupe key, so a message re-sent after a
sender crash is recognisably the same message (the local mailbox stores it once).

TLS: by default STARTTLS is used whenever the server offers it (implicit TLS on port 465), and a
login is refused on a connection that stayed in clear text unless EMPS_SMTP_ALLOW_PLAIN_LOGIN says
the relay is on a trusted network: a password or an alert never crosses the network unencrypted
by accident.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from emps.settings import NotificationSettings, Settings, get_settings


class DeliveryError(Exception):
    """A delivery failed, and whose fault it is.

    - `service`: the server or gateway can take no message now (unreachable, login or TLS
      refused, a setting to fix): every claimed row waits for the next try without using up an
      attempt, and the sender stops for this channel.
    - `connection_lost`: the connection broke while this message was on it: this row's attempt
      counts (it may be the cause), the sender reconnects for the next one.
    - otherwise the row's own error (a refused recipient, a rejected message, a missing
      attachment): counted against its attempts; `permanent` ends it `dead` at once.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        service: bool = False,
        connection_lost: bool = False,
    ):
        super().__init__(message)
        self.permanent = permanent
        self.service = service
        self.connection_lost = connection_lost


def message_id_for(dedupe_key: str) -> str:
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:32]
    return f"<{digest}@emps.alerts>"


def build_message(
    *,
    to: str,
    subject: str,
    text: str,
    html: str | None,
    dedupe_key: str,
    settings: Settings | None = None,
    attachments: list[tuple[str, bytes, str]] | None = None,
) -> EmailMessage:
    """A multipart text + HTML message; attachments are (file name, bytes, MIME type).

    Raises ValueError for what cannot be a message (a header with a line break, a MIME type
    without a subtype)."""
    settings = settings or get_settings()
    msg = EmailMessage()
    msg["From"] = settings.notifications.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id_for(dedupe_key)
    msg["X-EMPS-Dedupe-Key"] = dedupe_key
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    for name, data, mime in attachments or []:
        maintype, _, subtype = mime.partition("/")
        if not maintype or not subtype:
            raise ValueError(f"attachment {name!r} has MIME type {mime!r}, not type/subtype")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _where(settings: Settings) -> str:
    return f"SMTP server {settings.notifications.smtp_host}:{settings.notifications.smtp_port}"


def tls_options(settings: Settings) -> dict:
    """aiosmtplib's TLS arguments for EMPS_SMTP_TLS (auto on port 465 means implicit TLS)."""
    mode = settings.notifications.smtp_tls
    if mode == "auto" and settings.notifications.smtp_port == 465:
        mode = "tls"
    options: dict = {
        "use_tls": mode == "tls",
        # None: STARTTLS when the server offers it. False: never.
        "start_tls": {"auto": None, "starttls": True, "tls": False, "none": False}[mode],
    }
    if settings.notifications.ca_file:
        options["tls_context"] = tls_context(settings.notifications)
    return options


def tls_context(notifications: NotificationSettings) -> ssl.SSLContext:
    """The system's trusted CAs, plus EMPS_NOTIFY_CA_FILE when set."""
    context = ssl.create_default_context()
    if notifications.ca_file:
        context.load_verify_locations(cafile=str(notifications.ca_file))
    return context


def is_encrypted(smtp: aiosmtplib.SMTP) -> bool:
    return smtp.get_transport_info("sslcontext") is not None


async def smtp_password(settings: Settings) -> str:
    """EMPS_SMTP_PASSWORD, else the Prefect Secret block named by EMPS_SMTP_PASSWORD_BLOCK."""
    if settings.notifications.smtp_password is not None:
        return settings.notifications.smtp_password.get_secret_value()
    if settings.notifications.smtp_password_block:
        from prefect.blocks.system import Secret

        block: Secret[str] = await Secret.aload(settings.notifications.smtp_password_block)
        return str(block.get())
    return ""


def _connect_error(settings: Settings, exc: Exception) -> DeliveryError:
    where = _where(settings)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(
            f"{where}: its TLS certificate could not be verified ({exc.verify_message}); if a "
            "private CA signed it, set EMPS_NOTIFY_CA_FILE to that CA's certificate",
            service=True,
        )
    if isinstance(exc, ssl.SSLError):
        return DeliveryError(
            f"{where}: the TLS handshake failed ({exc}); check EMPS_SMTP_TLS and EMPS_SMTP_PORT "
            "(implicit TLS is usually port 465, STARTTLS 587)",
            service=True,
        )
    if isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS" in str(exc).upper():
        return DeliveryError(
            f"{where} does not offer STARTTLS, which EMPS_SMTP_TLS=starttls requires: use a "
            "server with TLS, or EMPS_SMTP_TLS=auto to send in clear text without a login",
            service=True,
        )
    return DeliveryError(f"{where} is unreachable: {exc}", service=True)


async def open_smtp(settings: Settings | None = None) -> aiosmtplib.SMTP:
    """Connect (TLS per EMPS_SMTP_TLS) and log in when a username is set. Raises DeliveryError
    (always `service`: nothing can be sent until it is fixed)."""
    settings = settings or get_settings()
    smtp = aiosmtplib.SMTP(
        hostname=settings.notifications.smtp_host,
        port=settings.notifications.smtp_port,
        timeout=settings.notifications.smtp_timeout_s,
        **tls_options(settings),
    )
    try:
        await smtp.connect()
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise _connect_error(settings, exc) from exc
    if not settings.notifications.smtp_username:
        return smtp
    if not is_encrypted(smtp) and not settings.notifications.smtp_allow_plain_login:
        smtp.close()
        why = (
            "EMPS_SMTP_TLS=none turns encryption off"
            if settings.notifications.smtp_tls == "none"
            else "the server does not offer STARTTLS"
        )
        raise DeliveryError(
            f"{_where(settings)}: not logging in as {settings.notifications.smtp_username!r} on a connection "
            f"without TLS ({why}): the password and every alert would cross the network in "
            "clear text. Use a server or port with TLS (EMPS_SMTP_TLS=starttls, or tls on port "
            "465), or set EMPS_SMTP_ALLOW_PLAIN_LOGIN=true if the relay is on a network you trust",
            service=True,
        )
    try:
        password = await smtp_password(settings)
    except Exception as exc:
        smtp.close()
        raise DeliveryError(
            f"the SMTP password could not be read from Prefect Secret block "
            f"{settings.notifications.smtp_password_block!r}: {exc}",
            service=True,
        ) from exc
    try:
        await smtp.login(settings.notifications.smtp_username, password)
    except aiosmtplib.SMTPAuthenticationError as exc:
        smtp.close()
        # The server's reply is safe to show; the password never is.
        raise DeliveryError(
            f"{_where(settings)} refused the login of user {settings.notifications.smtp_username!r} "
            f"({exc.code} {exc.message}): check EMPS_SMTP_USERNAME and EMPS_SMTP_PASSWORD",
            service=True,
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        smtp.close()
        raise DeliveryError(f"{_where(settings)} login failed: {exc}", service=True) from exc
    return smtp


async def send_one(smtp: aiosmtplib.SMTP, msg: EmailMessage, settings: Settings) -> None:
    """Send one message on an open connection within EMPS_SMTP_TIMEOUT_S, translating failures
    into DeliveryError (whose fault: see DeliveryError)."""
    where = _where(settings)
    try:
        async with asyncio.timeout(settings.notifications.smtp_timeout_s):
            await smtp.send_message(msg)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusals = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        permanent = all(r.code >= 500 for r in exc.recipients)
        raise DeliveryError(f"{where} refused recipient {refusals}", permanent=permanent) from exc
    except aiosmtplib.SMTPSenderRefused as exc:
        raise DeliveryError(
            f"{where} refused the sender {exc.sender!r} ({exc.code} {exc.message}): "
            "check EMPS_MAIL_FROM",
            service=True,
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == 421:  # the server is closing the session: it takes nothing now
            raise DeliveryError(
                f"{where} is not accepting mail now: {exc.code} {exc.message}", service=True
            ) from exc
        raise DeliveryError(
            f"{where} rejected the message: {exc.code} {exc.message}",
            permanent=exc.code >= 500,
        ) from exc
    except (TimeoutError, OSError) as exc:  # includes SMTPServerDisconnected, SMTPTimeoutError
        what = (
            "did not answer in time" if isinstance(exc, TimeoutError) else "dropped the connection"
        )
        raise DeliveryError(
            f"{where} {what} while this message was sent: {exc or type(exc).__name__}",
            connection_lost=True,
        ) from exc
    except aiosmtplib.SMTPException as exc:
        raise DeliveryError(f"{where} cannot take this message: {exc}", permanent=True) from exc


async def close_smtp(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
