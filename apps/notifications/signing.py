"""Webhook signatures: HMAC-SHA256 over the timestamp and the exact body, sent as
`Inferia-Signature: t=<unix seconds>,v1=<hex digest>` (the signed message is `<t>.<body>`). A receiver recomputes
the digest with the channel's secret, compares in constant time, and refuses old timestamps to stop replays."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Inferia-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 (the prefix that names a secret, not a secret)


def signing_secret_new() -> str:
    """A fresh signing secret (shown once, stored encrypted)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature_compute(*, secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of `<timestamp>.<body>` under `secret`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(*, secret: str, timestamp: int, body: bytes) -> str:
    """The `Inferia-Signature` header's value for `body` sent at `timestamp`."""
    return f"t={timestamp},v1={signature_compute(secret=secret, timestamp=timestamp, body=body)}"


def signature_verify(*, secret: str, header: str, body: bytes) -> bool:
    """Whether `header` signs `body` under `secret` (for receivers, and the tests that act as one)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    expected = signature_compute(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, parts.get("v1", ""))
