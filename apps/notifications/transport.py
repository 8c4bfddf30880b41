"""Sending one delivery: a signed JSON POST (webhook), a `{"text": ...}` POST (Slack-compatible) or an e-mail.

Runs only in Celery tasks, never in a request. HTTP goes through the SSRF-guarded connector that user-supplied
upstreams use (apps/compute/urlsafety.py), so every connection, redirects included, reaches public addresses only;
the whole call is bounded by INFERIA_NOTIFY_TIMEOUT_S and at most RESPONSE_READ_MAX bytes of the answer are read.
E-mail uses Django's mail settings (EMAIL_*), with EMAIL_TIMEOUT bounding the SMTP conversation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from django.conf import settings
from django.core.mail import send_mail

from apps.compute.credentials import credentials_decrypt
from apps.compute.urlsafety import guarded_connector
from apps.notifications.models import Channel, Delivery
from apps.notifications.signing import SIGNATURE_HEADER, signature_header

RESPONSE_READ_MAX = 4096


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: whether it was delivered, the HTTP status (if any), and why not."""

    ok: bool
    status: int | None = None
    error: str = ""


def webhook_body(delivery: Delivery) -> bytes:
    """The JSON a webhook receives: the delivery's id, event kind, summary and data."""
    document = {
        "id": delivery.pk,
        "kind": delivery.event_kind,
        "summary": delivery.summary,
        "created_at": delivery.created_at.isoformat(),
        "organization_id": delivery.organization_id,
        "data": delivery.payload,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


async def _post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    timeout = aiohttp.ClientTimeout(total=settings.INFERIA_NOTIFY_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=guarded_connector()) as session,
        session.post(url, data=body, headers=headers, max_redirects=3) as response,
    ):
        text = (await response.content.read(RESPONSE_READ_MAX)).decode(errors="replace")
        if 200 <= response.status < 300:
            return Outcome(ok=True, status=response.status)
        return Outcome(ok=False, status=response.status, error=f"HTTP {response.status}: {text[:200]}")


def _http(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    try:
        return asyncio.run(_post(url, body, {"Content-Type": "application/json", **headers}))
    except (aiohttp.ClientError, TimeoutError, OSError) as error:
        return Outcome(ok=False, error=f"{type(error).__name__}: {error}"[:500])


def delivery_transmit(delivery: Delivery) -> Outcome:
    """Send `delivery` to its channel once; never raises for the receiver's faults."""
    channel = delivery.channel
    if channel.kind == Channel.Kind.EMAIL:
        return _email(delivery)
    if channel.kind == Channel.Kind.SLACK:
        body = json.dumps({"text": f"[Inferia] {delivery.summary}"}).encode()
        return _http(channel.url, body, {})
    body = webhook_body(delivery)
    secret = str(credentials_decrypt(channel.secret_encrypted).get("secret", ""))
    headers: dict[str, Any] = {
        SIGNATURE_HEADER: signature_header(secret=secret, timestamp=int(time.time()), body=body),
        "Inferia-Event": delivery.event_kind,
        "Inferia-Delivery": str(delivery.pk),
    }
    return _http(channel.url, body, headers)


def _email(delivery: Delivery) -> Outcome:
    recipients = list(delivery.channel.recipients)
    if not recipients:
        return Outcome(ok=False, error="the channel has no recipients")
    text = delivery.summary + "\n\n" + json.dumps(delivery.payload, indent=2, sort_keys=True, default=str)
    try:
        send_mail(f"[Inferia] {delivery.summary}"[:200], text, settings.DEFAULT_FROM_EMAIL, recipients)
    except (OSError, ValueError) as error:  # smtplib's errors are OSErrors
        return Outcome(ok=False, error=f"{type(error).__name__}: {error}"[:500])
    return Outcome(ok=True)
