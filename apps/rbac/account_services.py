"""A person's own account as the Security page manages it: the console sessions they are signed in with (listed,
ended one at a time or all but the current one) and their password.

Sessions live in Django's session store (SESSION_ENGINE), which cannot be searched by user, so every signed-in
session also has a `UserSession` row: made at sign-in (or the first time the console sees a session from before
these rows existed), its last-seen time refreshed at most once a minute, dropped at sign-out. Ending a session deletes
it from the store, so the next request carrying its cookie is anonymous everywhere: console, admin and REST API.
A person only ever reaches their own rows: every lookup here is by `user`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.contrib.auth import SESSION_KEY, password_validation
from django.contrib.sessions.backends.base import SessionBase
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.orgs.models import User
from apps.rbac.login_services import login_failure_record, login_refusal
from apps.rbac.models import UserSession
from inferia_runtime.errors import DomainRefusal

SEEN_INTERVAL_S = 60  # how stale a session's last-seen time may get: one write a minute per active session at most
USER_AGENT_MAX = 300
SESSIONS_LISTED_MAX = 50


class AccountError(DomainRefusal):
    """A change to one's own account that cannot go ahead."""


class SessionNotFound(AccountError):
    """The session is not one of the user's (or it has already ended): the same answer either way."""


class PasswordChangeRefused(AccountError):
    """A password change refused, with the form field the reasons belong to (`current_password`, `new_password`)."""

    def __init__(self, field: str, reasons: list[str]) -> None:
        super().__init__(" ".join(reasons))
        self.field = field
        self.reasons = reasons


@dataclass(frozen=True)
class SessionSummary:
    """One of the user's signed-in sessions as the Security page lists it."""

    pk: int
    user_agent: str
    ip_address: str | None
    created_at: datetime
    last_seen_at: datetime
    current: bool


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key.encode()) for key in settings.INFERIA_FERNET_KEYS])


def _store(session_key: str | None = None) -> SessionBase:
    store: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    return store


def _seen_key(digest: str) -> str:
    return f"session-seen:{digest}"


def session_key_digest(session_key: str) -> str:
    """The stored form of a session key for lookups (keys are random, so a plain digest is enough)."""
    return hashlib.sha256(f"inferia-session:{session_key}".encode()).hexdigest()


def user_agent_clean(user_agent: str) -> str:
    """A user agent as stored: printable characters only (no NUL), at most USER_AGENT_MAX of them."""
    return "".join(ch for ch in user_agent if ch.isprintable())[:USER_AGENT_MAX]


def _session_key(row: UserSession) -> str | None:
    try:
        return _fernet().decrypt(row.key_encrypted.encode()).decode()
    except InvalidToken:  # encrypted under a key since retired: the session cannot be reached any more
        return None


def _session_alive(session_key: str | None, user: User) -> bool:
    """Whether the store still holds this session, unexpired and signed in as `user`."""
    if session_key is None:
        return False
    return str(_store(session_key).load().get(SESSION_KEY)) == str(user.pk)


# --- Reads -------------------------------------------------------------------------------------------------------


def user_sessions_active(*, user: User, current_key: str | None) -> list[SessionSummary]:
    """The user's signed-in sessions, the current one first, then the most recently seen. Rows whose session has
    ended meanwhile (expired, signed out elsewhere, its key cycled) are dropped as they are found: housekeeping of
    an index, not a change anyone made, so not audited."""
    current_digest = session_key_digest(current_key) if current_key else ""
    rows = list(UserSession.objects.filter(user=user).order_by("-last_seen_at")[:SESSIONS_LISTED_MAX])
    ended = [row.pk for row in rows if not _session_alive(_session_key(row), user)]
    if ended:
        UserSession.objects.filter(user=user, pk__in=ended).delete()
    summaries = [
        SessionSummary(
            pk=row.pk,
            user_agent=row.user_agent,
            ip_address=row.ip_address,
            created_at=row.created_at,
            last_seen_at=row.last_seen_at,
            current=row.key_digest == current_digest,
        )
        for row in rows
        if row.pk not in ended
    ]
    summaries.sort(key=lambda summary: not summary.current)  # stable: the rest stay most recent first
    return summaries


# --- Keeping the index -------------------------------------------------------------------------------------------


def user_session_register(*, user: User, session_key: str, user_agent: str, ip_address: str | None) -> UserSession:
    """Record a session that has just signed in as `user` (or one seen for the first time)."""
    digest = session_key_digest(session_key)
    now = timezone.now()
    row, _ = UserSession.objects.update_or_create(
        key_digest=digest,
        defaults={
            "user": user,
            "key_encrypted": _fernet().encrypt(session_key.encode()).decode(),
            "user_agent": user_agent_clean(user_agent),
            "ip_address": ip_address,
            "last_seen_at": now,
        },
        create_defaults={
            "user": user,
            "key_encrypted": _fernet().encrypt(session_key.encode()).decode(),
            "user_agent": user_agent_clean(user_agent),
            "ip_address": ip_address,
            "last_seen_at": now,
            "created_at": now,
        },
    )
    cache.set(_seen_key(digest), 1, timeout=SEEN_INTERVAL_S)
    return row


def user_session_seen(*, user: User, session_key: str, user_agent: str, ip_address: str | None) -> None:
    """The console saw a request of this session: refresh its last-seen time and address, at most once a minute
    (a Redis key with a minute's lifetime decides), registering the session if it has no row yet."""
    digest = session_key_digest(session_key)
    if not cache.add(_seen_key(digest), 1, timeout=SEEN_INTERVAL_S):
        return
    updated = UserSession.objects.filter(key_digest=digest, user=user).update(
        last_seen_at=timezone.now(), ip_address=ip_address
    )
    if not updated:
        user_session_register(user=user, session_key=session_key, user_agent=user_agent, ip_address=ip_address)


def user_session_rekey(*, user: User, old_key: str, new_key: str) -> None:
    """The session's key was cycled (Django does after a password change and similar): follow it, keeping the
    row's sign-in time."""
    UserSession.objects.filter(user=user, key_digest=session_key_digest(old_key)).update(
        key_digest=session_key_digest(new_key), key_encrypted=_fernet().encrypt(new_key.encode()).decode()
    )
    cache.set(_seen_key(session_key_digest(new_key)), 1, timeout=SEEN_INTERVAL_S)


def user_session_forget(*, session_key: str) -> None:
    """The session signed out (the sign-out itself is audited by whoever signed it out)."""
    UserSession.objects.filter(key_digest=session_key_digest(session_key)).delete()


# --- Ending sessions ---------------------------------------------------------------------------------------------


def _end(rows: list[UserSession]) -> list[dict[str, str | None]]:
    """Delete the rows' sessions from the store and the rows; what each was, for the audit trail."""
    ended = []
    for row in rows:
        session_key = _session_key(row)
        if session_key is not None:
            _store(session_key).delete()
        ended.append({"user_agent": row.user_agent, "ip_address": row.ip_address})
    UserSession.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return ended


@transaction.atomic
def user_session_end(
    *, user: User, session_pk: int, current_key: str | None, actor: Actor, context: AuditContext | None = None
) -> None:
    """Sign one of the user's other sessions out. Another user's session, or one already ended, is SessionNotFound;
    the current session is refused (signing out is the way to end it)."""
    row = UserSession.objects.select_for_update().filter(user=user, pk=session_pk).first()
    if row is None:
        raise SessionNotFound("That session has already ended.")
    if current_key and row.key_digest == session_key_digest(current_key):
        raise AccountError("That is the session you are using: sign out to end it.")
    ended = _end([row])
    audit_record(action="session.end", actor=actor, target=user, changes={"sessions": ended}, context=context)


def _end_others(user: User, current_key: str | None) -> list[dict[str, str | None]]:
    others = UserSession.objects.select_for_update().filter(user=user)
    if current_key:
        others = others.exclude(key_digest=session_key_digest(current_key))
    return _end(list(others))


@transaction.atomic
def user_sessions_end_others(
    *, user: User, current_key: str | None, actor: Actor, context: AuditContext | None = None
) -> int:
    """Sign out every session of the user's but the current one; returns how many ended."""
    ended = _end_others(user, current_key)
    audit_record(
        action="session.end_others",
        actor=actor,
        target=user,
        changes={"count": len(ended), "sessions": ended},
        context=context,
    )
    return len(ended)


# --- Password ----------------------------------------------------------------------------------------------------


def user_password_change(
    *,
    user: User,
    current_password: str,
    new_password: str,
    current_key: str | None,
    actor: Actor,
    context: AuditContext | None = None,
) -> int:
    """Change the user's password, proven by the current one and checked by AUTH_PASSWORD_VALIDATORS; every other
    session of theirs is signed out. Returns how many were. Wrong current passwords count towards the sign-in
    throttle (apps/rbac/login_services.py), so a borrowed session cannot be used to guess the password.

    The caller keeps its own session signed in (Django's `update_session_auth_hash`, which cycles the key: follow
    it with `user_session_rekey`)."""
    address = context.ip_address if context else None
    if login_refusal(email=user.email, address=address) is not None:
        raise PasswordChangeRefused(
            "current_password", ["Too many wrong passwords. Wait a few minutes, then try again."]
        )
    if not user.check_password(current_password):
        login_failure_record(
            email=user.email, user=user, context=context or AuditContext(), reason="wrong current password"
        )
        raise PasswordChangeRefused("current_password", ["That is not your current password."])
    if new_password == current_password:
        raise PasswordChangeRefused("new_password", ["The new password is the same as the current one."])
    try:
        password_validation.validate_password(new_password, user=user)
    except ValidationError as error:
        raise PasswordChangeRefused("new_password", list(error.messages)) from None
    with transaction.atomic():
        locked = User.objects.select_for_update().get(pk=user.pk)
        locked.set_password(new_password)
        locked.save(update_fields=["password"])
        user.password = locked.password  # the caller's instance: its session auth hash follows the new password
        ended = _end_others(user, current_key)
        audit_record(
            action="password.change",
            actor=actor,
            target=user,
            changes={"sessions_ended": len(ended)},
            context=context,
        )
    return len(ended)
