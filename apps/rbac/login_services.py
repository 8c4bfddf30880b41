"""Password sign-in hardening: throttling and lockout after repeated failures, and the audit trail of sign-ins.

Failures are counted in Redis per account and per client address over a sliding window; at the limit, further
attempts are refused (even with the right password) until the window passes. Every attempt is audited.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record


@dataclass(frozen=True)
class LoginLimits:
    """How many failures an account or an address may have within `window_s` before it is locked out."""

    per_account: int
    per_address: int
    window_s: int


def login_limits() -> LoginLimits:
    return LoginLimits(
        per_account=getattr(settings, "INFERIA_LOGIN_MAX_FAILURES", 5),
        per_address=getattr(settings, "INFERIA_LOGIN_MAX_FAILURES_PER_IP", 50),
        window_s=getattr(settings, "INFERIA_LOGIN_LOCKOUT_SECONDS", 15 * 60),
    )


def _counter_keys(email: str, address: str | None) -> list[str]:
    account = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    keys = [f"login-fail:acct:{account}"]
    if address:
        keys.append(f"login-fail:addr:{address}")
    return keys


def login_is_locked(*, email: str, address: str | None) -> bool:
    """Whether sign-in for this account, or from this address, is locked out right now."""
    limits = login_limits()
    counts = cache.get_many(_counter_keys(email, address))
    account_key, *address_key = _counter_keys(email, address)
    if counts.get(account_key, 0) >= limits.per_account:
        return True
    return bool(address_key) and counts.get(address_key[0], 0) >= limits.per_address


def login_failure_record(*, email: str, user: Any, context: AuditContext, reason: str) -> None:
    """Count a failed attempt (wrong password, unknown account, or refused while locked) and audit it."""
    limits = login_limits()
    for key in _counter_keys(email, context.ip_address):
        cache.add(key, 0, timeout=limits.window_s)  # starts the window at the first failure
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=limits.window_s)
    with transaction.atomic():
        audit_record(
            action="login.failure",
            actor=user,
            target=user,
            changes={"email": email.strip().lower(), "reason": reason},
            outcome=AuditEvent.Outcome.DENIED if reason == "locked" else AuditEvent.Outcome.FAILURE,
            context=context,
        )


def login_success_record(*, user: Any, context: AuditContext) -> None:
    """A password check passed: clear the account's failure count and audit the sign-in."""
    cache.delete(_counter_keys(user.email, None)[0])
    with transaction.atomic():
        audit_record(action="login.success", actor=user, target=user, context=context)
