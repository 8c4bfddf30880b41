"""Creating and revoking API keys (a member's keys too, as they leave). The secret exists in clear only in the
return value of a create."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record, audited_update
from apps.keys.cache import key_cache_purge
from apps.keys.models import ApiKey, Scope, still_working
from apps.orgs.models import Membership, Organization, Team, User
from apps.orgs.services import membership_remove
from inferia_runtime.errors import DomainRefusal

KEY_PREFIX = "sk-inf-"
_VISIBLE_CHARS = 8  # after KEY_PREFIX; enough to tell keys apart in a list, far too little to guess the rest


def hash_key(secret: str) -> str:
    """SHA-256 of a presented key, as stored. Keys carry 256 bits of randomness, so no slow hash is needed."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key and its secret, which is shown once and never stored."""

    key: ApiKey
    secret: str


def _new_secret() -> tuple[str, str]:
    while True:
        secret = KEY_PREFIX + secrets.token_urlsafe(32).replace("-", "A").replace("_", "b")
        prefix = secret[: len(KEY_PREFIX) + _VISIBLE_CHARS]
        if not ApiKey.objects.filter(prefix=prefix).exists():
            return secret, prefix


def api_key_create(
    *,
    organization: Organization,
    name: str,
    scopes: list[str],
    actor: Actor = None,
    owner: User | None = None,
    team: Team | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_vector_stores: list[str] | None = None,
    context: AuditContext | None = None,
    purpose: str = ApiKey.Purpose.APPLICATION,
) -> IssuedKey:
    """Issue a key for `organization`. Unknown scopes are refused; a team must belong to the organisation; an expiry
    must lie in the future. `purpose` marks a key the console issues for itself (the playground's)."""
    unknown = set(scopes) - set(Scope.values)
    if unknown:
        raise DomainRefusal(f"unknown scopes: {', '.join(sorted(unknown))}")
    if team is not None and team.organization_id != organization.pk:
        raise DomainRefusal("the team belongs to another organisation")
    if expires_at is not None and expires_at <= timezone.now():
        # A key born expired would only ever answer 401, which reads as a broken key rather than a typo.
        raise DomainRefusal("the expiry is in the past: choose a later time")
    secret, prefix = _new_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            organization=organization,
            team=team,
            owner=owner,
            name=name,
            prefix=prefix,
            secret_hash=hash_key(secret),
            scopes=sorted(set(scopes)),
            allowed_models=allowed_models or [],
            allowed_vector_stores=vector_stores_check(allowed_vector_stores),
            expires_at=expires_at,
            created_by=actor if isinstance(actor, User) else None,
            purpose=ApiKey.Purpose(purpose),
        )
        changes: dict[str, Any] = {"name": name, "scopes": key.scopes, "team": team.pk if team else None}
        if purpose:
            changes["purpose"] = str(purpose)
        audit_record(
            action="key.create",
            actor=actor,
            target=key,
            changes=changes,
            context=context,
        )
    return IssuedKey(key=key, secret=secret)


# How stale `last_used_at` may get before a call refreshes it: one write a minute per key, not per call.
LAST_USED_GRANULARITY = timedelta(minutes=1)


def api_key_authenticate(*, secret: str) -> ApiKey | None:
    """The usable key `secret` is (with its organisation and owner), or None: unknown, revoked, expired, of an
    inactive organisation or of a deactivated owner. Records when it was last used, at most once a minute, for the
    Django-served endpoints (the REST API, /v1's files and vector stores); the gateway records its own through usage."""
    if not secret.startswith(KEY_PREFIX):
        return None
    key = (
        ApiKey.objects.select_related("owner", "organization")
        .filter(secret_hash=hash_key(secret), organization__is_active=True)
        .first()
    )
    if key is None or not key.is_usable() or (key.owner is not None and not key.owner.is_active):
        return None
    now = timezone.now()
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_GRANULARITY:
        # A conditional UPDATE: concurrent requests with the same key write once.
        ApiKey.objects.filter(pk=key.pk, last_used_at=key.last_used_at).update(last_used_at=now)
    return key


def api_key_revoke(
    *, key: ApiKey, actor: Actor = None, reason: str = "", context: AuditContext | None = None
) -> ApiKey:
    """Revoke a key now. Every gateway process drops it from its caches as soon as the revocation commits."""
    with transaction.atomic():
        key.revoked_at = key.end_recorded_at = timezone.now()
        key.save(update_fields=["revoked_at", "end_recorded_at"])
        audit_record(action="key.revoke", actor=actor, target=key, changes={"reason": reason}, context=context)
        secret_hash = key.secret_hash
        transaction.on_commit(lambda: key_cache_purge(secret_hash=secret_hash))
    return key


@transaction.atomic
def membership_offboard(*, membership: Membership, actor: Actor, context: AuditContext | None = None) -> int:
    """Remove a member and revoke the keys they own in the organisation, in one transaction, so `/v1` drops the
    keys as the membership goes. Composed here because orgs, below keys, cannot revoke keys. Returns how many keys
    were revoked."""
    keys = list(
        ApiKey.objects.select_for_update().filter(
            still_working(), organization_id=membership.organization_id, owner_id=membership.user_id
        )
    )
    for key in keys:
        api_key_revoke(key=key, actor=actor, reason="owner removed from the organisation", context=context)
    membership_remove(membership=membership, actor=actor, context=context)
    return len(keys)


# How long a rotated key keeps working, so that deployments can roll the new secret out without downtime.
ROTATION_GRACE = timedelta(hours=24)
KEY_EDITABLE_FIELDS = ("name", "expires_at", "allowed_models", "allowed_vector_stores")
VECTOR_STORES_PER_KEY_MAX = 100


def vector_stores_check(ids: list[str] | None) -> list[str]:
    """A key's vector-store allow-list: public ids (`vs_...`), checked for shape only, so that naming a store of
    another organisation reveals nothing (it simply never matches one the key may see)."""
    ids = sorted(set(ids or []))
    if len(ids) > VECTOR_STORES_PER_KEY_MAX:
        raise DomainRefusal(f"a key may name at most {VECTOR_STORES_PER_KEY_MAX} vector stores")
    for value in ids:
        if not (value.startswith("vs_") and 3 < len(value) <= 40 and value.isascii() and value.isprintable()):
            raise DomainRefusal(f"not a vector store id: {value[:50]!r}")
    return ids


def api_key_rotate(
    *, key: ApiKey, actor: Actor, grace: timedelta = ROTATION_GRACE, context: AuditContext | None = None
) -> IssuedKey:
    """Issue a successor with the same organisation, team, owner, scopes, models and expiry, and schedule the old
    key's revocation `grace` from now (immediately when `grace` is zero). The new secret is shown once."""
    if not key.is_usable():
        raise DomainRefusal("a revoked or expired key cannot be rotated")
    if grace < timedelta(0):
        raise DomainRefusal("the grace period cannot be negative")
    secret, prefix = _new_secret()
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        if hasattr(old, "rotated_to"):
            raise DomainRefusal("this key was already rotated")
        new = ApiKey.objects.create(
            organization_id=old.organization_id,
            team_id=old.team_id,
            owner_id=old.owner_id,
            name=old.name,
            prefix=prefix,
            secret_hash=hash_key(secret),
            scopes=old.scopes,
            allowed_models=old.allowed_models,
            allowed_vector_stores=old.allowed_vector_stores,
            expires_at=old.expires_at,
            created_by=actor if isinstance(actor, User) else None,
            purpose=old.purpose,
            rotated_from=old,
        )
        old.revoked_at = timezone.now() + grace
        old.save(update_fields=["revoked_at"])
        audit_record(
            action="key.rotate",
            actor=actor,
            target=old,
            changes={"successor": new.pk, "successor_prefix": new.prefix, "old_key_ends": old.revoked_at.isoformat()},
            context=context,
        )
        secret_hash, usable = old.secret_hash, old.is_usable()
        transaction.on_commit(lambda: key_cache_purge(secret_hash=secret_hash, still_usable=usable))
    key.revoked_at = old.revoked_at
    return IssuedKey(key=new, secret=secret)


def api_key_update(
    *, key: ApiKey, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> ApiKey:
    """Rename a key, change its expiry or the models it may call. Scopes, team and owner never change (issue a
    new key instead), so a key cannot be widened after it was handed out."""
    if "allowed_vector_stores" in changes:
        changes = {**changes, "allowed_vector_stores": vector_stores_check(changes["allowed_vector_stores"])}
    with transaction.atomic():
        key = audited_update(
            key, changes=changes, allowed=KEY_EDITABLE_FIELDS, action="key.update", actor=actor, context=context
        )
        secret_hash, usable = key.secret_hash, key.is_usable()
        transaction.on_commit(lambda: key_cache_purge(secret_hash=secret_hash, still_usable=usable))
    return key


KEY_END_BATCH = 500


def api_key_ends_record(*, now: datetime | None = None) -> int:
    """Write `key.expire` to the audit log, once, for every key that stopped working by itself since the last run:
    its `expires_at` passed, or the grace period of a rotation ended. Revocations are recorded when they happen.
    The gateways refuse such keys already (they check both times on every request); this is the record of it.
    Returns how many were recorded."""
    moment = now or timezone.now()
    recorded = 0
    while True:
        due = list(
            ApiKey.objects.filter(end_recorded_at__isnull=True)
            .filter(Q(expires_at__lte=moment) | Q(revoked_at__lte=moment))
            .order_by("pk")[:KEY_END_BATCH]
        )
        for key in due:
            with transaction.atomic():
                # The conditional update lets one of several concurrent runs record a key.
                if not ApiKey.objects.filter(pk=key.pk, end_recorded_at__isnull=True).update(end_recorded_at=moment):
                    continue
                ended_at, reason = min(
                    (at, reason)
                    for at, reason in ((key.expires_at, "expired"), (key.revoked_at, "rotation grace ended"))
                    if at is not None and at <= moment
                )
                audit_record(action="key.expire", target=key, changes={"reason": reason, "at": ended_at.isoformat()})
            recorded += 1
        if len(due) < KEY_END_BATCH:
            return recorded
