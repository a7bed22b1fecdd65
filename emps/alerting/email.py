"""Email delivery over SMTP (aiosmtplib): one connection per batch, STARTTLS and login from settings.

Every message carries a Message-ID derived from its outbox dedupe key, so a message re-sent after a
sender crash is recognisably the same message (the local mailbox stores it once).
"""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.utils import formatdate

import aiosmtplib

from emps.settings import Settings, get_settings


class DeliveryError(Exception):
    """A delivery failed. `permanent`: retrying cannot help; `whole_batch`: stop the batch."""

    def __init__(self, message: str, *, permanent: bool = False, whole_batch: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.whole_batch = whole_batch


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
    """A multipart text + HTML message; attachments are (file name, bytes, MIME type)."""
    settings = settings or get_settings()
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = message_id_for(dedupe_key)
    msg["X-EMPS-Dedupe-Key"] = dedupe_key
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    for name, data, mime in attachments or []:
        maintype, subtype = mime.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _where(settings: Settings) -> str:
    return f"SMTP server {settings.smtp_host}:{settings.smtp_port}"


async def smtp_password(settings: Settings) -> str:
    """EMPS_SMTP_PASSWORD, else the Prefect Secret block named by EMPS_SMTP_PASSWORD_BLOCK."""
    if settings.smtp_password is not None:
        return settings.smtp_password.get_secret_value()
    if settings.smtp_password_block:
        from prefect.blocks.system import Secret

        block = await Secret.aload(settings.smtp_password_block)
        return str(block.get())
    return ""


async def open_smtp(settings: Settings | None = None) -> aiosmtplib.SMTP:
    """Connect, STARTTLS when configured, log in when a username is set. Raises DeliveryError."""
    settings = settings or get_settings()
    smtp = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        timeout=settings.smtp_timeout_s,
        start_tls=settings.smtp_starttls,
    )
    try:
        await smtp.connect()
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{_where(settings)} is unreachable: {exc}", whole_batch=True) from exc
    if settings.smtp_username:
        try:
            password = await smtp_password(settings)
        except Exception as exc:
            smtp.close()
            raise DeliveryError(
                f"the SMTP password could not be read from Prefect Secret block "
                f"{settings.smtp_password_block!r}: {exc}",
                whole_batch=True,
            ) from exc
        try:
            await smtp.login(settings.smtp_username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            smtp.close()
            # The server's reply is safe to show; the password never is.
            raise DeliveryError(
                f"{_where(settings)} refused the login of user {settings.smtp_username!r} "
                f"({exc.code} {exc.message}): check EMPS_SMTP_USERNAME and EMPS_SMTP_PASSWORD",
                whole_batch=True,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            smtp.close()
            raise DeliveryError(
                f"{_where(settings)} login failed: {exc}", whole_batch=True
            ) from exc
    return smtp


async def send_one(smtp: aiosmtplib.SMTP, msg: EmailMessage, settings: Settings) -> None:
    """Send one message on an open connection, translating failures into DeliveryError."""
    try:
        await smtp.send_message(msg)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refusals = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        permanent = all(r.code >= 500 for r in exc.recipients)
        raise DeliveryError(
            f"{_where(settings)} refused recipient {refusals}", permanent=permanent
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise DeliveryError(
            f"{_where(settings)} rejected the message: {exc.code} {exc.message}",
            permanent=exc.code >= 500,
        ) from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(
            f"{_where(settings)} dropped the connection: {exc}", whole_batch=True
        ) from exc


async def close_smtp(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
