"""SMS through an HTTP gateway: POST to a URL template with a bearer token (httpx), over https
unless EMPS_SMS_ALLOW_HTTP says the gateway is on a trusted network."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import httpx

from emps.alerting.email import DeliveryError, tls_context
from emps.settings import NotificationSettings, get_settings


def gateway_url(to: str, text: str, notifications: NotificationSettings) -> str:
    template = notifications.sms_gateway_url or ""
    return template.format(to=quote(to, safe=""), text=quote(text, safe=""))


def check_gateway(notifications: NotificationSettings) -> None:
    """Raise DeliveryError (service) when the gateway is missing or would get the token in clear."""
    url = notifications.sms_gateway_url
    if not url:
        raise DeliveryError("no SMS gateway configured (EMPS_SMS_GATEWAY_URL)", service=True)
    parsed = httpx.URL(url.replace("{", "").replace("}", ""))
    if parsed.scheme != "https" and not (parsed.scheme == "http" and notifications.sms_allow_http):
        raise DeliveryError(
            f"EMPS_SMS_GATEWAY_URL is {parsed.scheme}:// ({parsed.host}), not https://: the "
            "bearer token and the texts would cross the network in clear text. Use the "
            "gateway's https address, or set EMPS_SMS_ALLOW_HTTP=true if it is on a network "
            "you trust",
            service=True,
        )


def sms_client(notifications: NotificationSettings) -> httpx.AsyncClient:
    """One client per batch; trusts EMPS_NOTIFY_CA_FILE besides the system's CAs."""
    return httpx.AsyncClient(
        timeout=notifications.smtp_timeout_s, verify=tls_context(notifications)
    )


async def send_sms(
    client: httpx.AsyncClient,
    *,
    to: str,
    text: str,
    dedupe_key: str,
    notifications: NotificationSettings | None,
) -> None:
    """One SMS; the gateway gets the dedupe key as Idempotency-Key. Raises DeliveryError."""
    notifications = notifications or get_settings().notifications
    check_gateway(notifications)
    headers = {"Idempotency-Key": dedupe_key}
    if notifications.sms_gateway_token:
        headers["Authorization"] = f"Bearer {notifications.sms_gateway_token.get_secret_value()}"
    url = gateway_url(to, text, notifications)
    # The URL may embed the token as a query parameter: report only the host.
    host = httpx.URL(url).host
    try:
        async with asyncio.timeout(notifications.smtp_timeout_s):
            response = await client.post(
                url, json={"to": to, "text": text, "id": dedupe_key}, headers=headers
            )
    except (httpx.HTTPError, TimeoutError) as exc:
        # Down, hung or refusing TLS: no text can go now. A text the gateway did take before the
        # connection broke is taken once more under the same Idempotency-Key.
        raise DeliveryError(
            f"SMS gateway {host} is unreachable: {exc or type(exc).__name__}", service=True
        ) from exc
    if response.status_code < 300:
        return
    detail = response.text[:200]
    status = response.status_code
    message = f"SMS gateway {host} answered {status} for {to}: {detail}"
    if status in (401, 403):
        raise DeliveryError(f"{message} (check EMPS_SMS_GATEWAY_TOKEN)", service=True)
    if status in (408, 429) or status >= 500:
        # Busy or failing: the gateway's state, not this text's.
        raise DeliveryError(message, service=True)
    # Any other 4xx: the gateway refuses this text (a malformed number): retrying cannot help.
    raise DeliveryError(message, permanent=400 <= status < 500)
