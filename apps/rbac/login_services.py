"""Password sign-in hardening: throttling after repeated failures, and the audit trail of sign-ins.

Failures are counted in Redis over a window (INFERIA_LOGIN_LOCKOUT_SECONDS from the first failure) three ways:
- per account and client address: at INFERIA_LOGIN_MAX_FAILURES that pair is locked until the window passes,
  even for the right password;
- per client address, across accounts: at INFERIA_LOGIN_MAX_FAILURES_PER_IP the address is locked (a password
  sprayer);
- per account, across addresses: from INFERIA_LOGIN_SLOWDOWN_AFTER failures on, the account's next attempt must wait
  a delay that doubles with each failure, up to INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS after the latest one. A lock here
  would let anyone who knows the superadmin's address lock them out from everywhere; the delay only slows guessing.
Refused attempts are audited but not counted, so hammering a lock neither extends it nor grows the delay. The client
address is `inferia_runtime.client_address` (X-Forwarded-For only from trusted proxies).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record
from apps.orgs.models import User


@dataclass(frozen=True)
class LoginLimits:
    """The throttle's settings: failures per (account, address) pair and per address before a lock, the window,
    and the per-account slowdown's threshold and longest delay."""

    per_pair: int
    per_address: int
    window_s: int
    slowdown_after: int
    slowdown_max_s: float


@dataclass(frozen=True)
class LoginRefusal:
    """Why an attempt is refused before its password is checked: `locked` (the pair or the address, until the window
    passes) or `slowed` (the account, for `retry_after_s` more seconds)."""

    reason: str
    retry_after_s: float = 0.0


def login_limits() -> LoginLimits:
    return LoginLimits(
        per_pair=settings.INFERIA_LOGIN_MAX_FAILURES,
        per_address=settings.INFERIA_LOGIN_MAX_FAILURES_PER_IP,
        window_s=settings.INFERIA_LOGIN_LOCKOUT_SECONDS,
        slowdown_after=settings.INFERIA_LOGIN_SLOWDOWN_AFTER,
        slowdown_max_s=settings.INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS,
    )


def _account(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


def _keys(email: str, address: str | None) -> dict[str, str]:
    account = _account(email)
    keys = {"account": f"login-fail:acct:{account}", "last": f"login-fail:last:{account}"}
    if address:
        keys["pair"] = f"login-fail:pair:{account}:{address}"
        keys["address"] = f"login-fail:addr:{address}"
    return keys


def login_counters_clear(*, email: str, address: str | None) -> None:
    """Forget the failures of `email` (and of the pair and address when `address` is given)."""
    cache.delete_many(list(_keys(email, address).values()))


def _slowdown_s(failures: int, limits: LoginLimits) -> float:
    if failures < limits.slowdown_after:
        return 0.0
    return min(limits.slowdown_max_s, 2.0 ** (failures - limits.slowdown_after))


def login_refusal(*, email: str, address: str | None) -> LoginRefusal | None:
    """Whether an attempt to sign in as `email` from `address` is refused right now, and why."""
    limits = login_limits()
    keys = _keys(email, address)
    values = cache.get_many(list(keys.values()))
    if values.get(keys.get("pair", ""), 0) >= limits.per_pair:
        return LoginRefusal("locked")
    if values.get(keys.get("address", ""), 0) >= limits.per_address:
        return LoginRefusal("locked")
    delay = _slowdown_s(values.get(keys["account"], 0), limits)
    wait = float(values.get(keys["last"], 0.0)) + delay - time.time()
    if delay and wait > 0:
        return LoginRefusal("slowed", retry_after_s=wait)
    return None


def login_is_locked(*, email: str, address: str | None) -> bool:
    """Whether sign-in for this account from this address is refused right now (locked or slowed down)."""
    return login_refusal(email=email, address=address) is not None


def _count(key: str, window_s: int) -> None:
    cache.add(key, 0, timeout=window_s)  # starts the window at the first failure
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window_s)


def login_failure_record(*, email: str, user: User | None, context: AuditContext, reason: str) -> None:
    """Audit a failed attempt (wrong password, unknown account, or refused: `locked` / `slowed`); count it unless it
    was refused."""
    limits = login_limits()
    if reason not in ("locked", "slowed"):
        keys = _keys(email, context.ip_address)
        for name in ("account", "pair", "address"):
            if name in keys:
                _count(keys[name], limits.window_s)
        cache.set(keys["last"], time.time(), timeout=limits.window_s)
    with transaction.atomic():
        audit_record(
            action="login.failure",
            actor=user,
            target=user,
            changes={"email": email.strip().lower(), "reason": reason},
            outcome=AuditEvent.Outcome.DENIED if reason in ("locked", "slowed") else AuditEvent.Outcome.FAILURE,
            context=context,
        )


def login_success_record(*, user: User, context: AuditContext) -> None:
    """A password check passed: clear the account's and this pair's failure counts and audit the sign-in. The
    address's count across accounts stays: one good password must not reset a sprayer's tally."""
    keys = _keys(user.email, context.ip_address)
    cache.delete_many([keys[name] for name in ("account", "last", "pair") if name in keys])
    with transaction.atomic():
        audit_record(action="login.success", actor=user, target=user, context=context)
