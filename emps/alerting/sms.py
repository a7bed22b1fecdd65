"""SMS through an HTTP gateway: POST to a URL template with a bearer token (httpx)."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from emps.alerting.email import DeliveryError
from emps.settings import Settings, get_settings


def gateway_url(to: str, text: str, settings: Settings) -> str:
    template = settings.sms_gateway_url or ""
    return template.format(to=quote(to, safe=""), text=quote(text, safe=""))


async def send_sms(
    client: httpx.AsyncClient, *, to: str, text: str, dedupe_key: str, settings: Settings | None
) -> None:
    """One SMS; the gateway gets the dedupe key as Idempotency-Key. Raises DeliveryError."""
    settings = settings or get_settings()
    if not settings.sms_gateway_url:
        raise DeliveryError("no SMS gateway configured (EMPS_SMS_GATEWAY_URL)", permanent=True)
    headers = {"Idempotency-Key": dedupe_key}
    if settings.sms_gateway_token:
        headers["Authorization"] = f"Bearer {settings.sms_gateway_token.get_secret_value()}"
    url = gateway_url(to, text, settings)
    # The URL may embed the token as a query parameter: report only the host.
    host = httpx.URL(url).host
    try:
        response = await client.post(
            url, json={"to": to, "text": text, "id": dedupe_key}, headers=headers
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"SMS gateway {host} is unreachable: {exc}", whole_batch=True) from exc
    if response.status_code < 300:
        return
    detail = response.text[:200]
    # A wrong token (401/403) may be fixed by the operator: retried with backoff, not dropped.
    permanent = 400 <= response.status_code < 500 and response.status_code not in (
        401,
        403,
        408,
        429,
    )
    raise DeliveryError(
        f"SMS gateway {host} answered {response.status_code} for {to}: {detail}",
        permanent=permanent,
        whole_batch=response.status_code in (401, 403),
    )
