"""Creating and revoking API keys. The secret exists in clear only in the return value of a create."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import AuditContext, audit_record
from apps.keys.models import ApiKey, Scope
from apps.orgs.models import User

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
    organization: Any,
    name: str,
    scopes: list[str],
    actor: Any = None,
    owner: Any = None,
    team: Any = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    context: AuditContext | None = None,
) -> IssuedKey:
    """Issue a key for `organization`. Unknown scopes are refused; a team must belong to the organisation."""
    unknown = set(scopes) - set(Scope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
    if team is not None and team.organization_id != organization.pk:
        raise ValueError("the team belongs to another organisation")
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
            expires_at=expires_at,
            created_by=actor if isinstance(actor, User) else None,
        )
        audit_record(
            action="key.create",
            actor=actor,
            target=key,
            changes={"name": name, "scopes": key.scopes, "team": team.pk if team else None},
            context=context,
        )
    return IssuedKey(key=key, secret=secret)


def api_key_revoke(*, key: ApiKey, actor: Any = None, reason: str = "", context: AuditContext | None = None) -> ApiKey:
    """Revoke a key now. Gateways drop it from their caches on the next lookup (within the cache TTL)."""
    with transaction.atomic():
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(action="key.revoke", actor=actor, target=key, changes={"reason": reason}, context=context)
    return key
