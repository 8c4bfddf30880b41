"""Socket tokens: what a browser presents to `/v1/chat/socket`, which cannot carry an `Authorization` header.

An application's backend, holding an API key, mints a token for its page (`POST /api/socket-tokens/`); the page
sends it as the socket's first message. A token acts as the one key it was minted for, within that key's
organisation; it lives a short, bounded time and is spent by the first connection that presents it. Only its
SHA-256 is stored, in Redis, and minting is audited without it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import redis.asyncio as aioredis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.keys.models import ApiKey, Scope
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.redis_clients import sync_redis

SOCKET_TOKEN_PREFIX = "wst-"  # noqa: S105 (a prefix, not a secret)
_TOKEN_MAX_LENGTH = 100
_REDIS_KEY = "inferia:socket-token:{token_hash}"


@dataclass(frozen=True)
class SocketToken:
    """A minted token, shown once to its minter and never stored in clear."""

    token: str
    key: ApiKey
    expires_at: datetime
    expires_in: int


@dataclass(frozen=True, slots=True)
class SocketGrant:
    """What a redeemed token stands for: its key (by hash) and that key's organisation."""

    key_hash: str
    organization_id: int


def _redis_key(token: str) -> str:
    return _REDIS_KEY.format(token_hash=hashlib.sha256(token.encode()).hexdigest())


def socket_token_mint(
    *, key: ApiKey, actor: Actor, ttl_seconds: int | None = None, context: AuditContext | None = None
) -> SocketToken:
    """A single-use token that opens one `/v1/chat/socket` connection as `key`, for `ttl_seconds` (the configured
    default when None; at most the configured maximum). The key must be usable and have the `inference` scope."""
    ttl = settings.INFERIA_SOCKET_TOKEN_TTL_SECONDS if ttl_seconds is None else ttl_seconds
    ceiling = settings.INFERIA_SOCKET_TOKEN_TTL_MAX_SECONDS
    if not 1 <= ttl <= ceiling:
        raise DomainRefusal(f"ttl_seconds must be between 1 and {ceiling}")
    if not key.is_usable():
        raise DomainRefusal("the key is revoked or expired")
    if Scope.INFERENCE not in key.scopes:
        raise DomainRefusal("the key lacks the 'inference' scope, which the socket needs")
    token = SOCKET_TOKEN_PREFIX + secrets.token_urlsafe(32)
    grant = json.dumps({"key_hash": key.secret_hash, "organization_id": key.organization_id})
    with transaction.atomic():
        audit_record(
            action="key.socket_token_mint", actor=actor, target=key, changes={"ttl_seconds": ttl}, context=context
        )
        # Last in the transaction: if Redis refuses, nothing was audited; the audit row commits with a usable token.
        sync_redis().set(_redis_key(token), grant, ex=ttl)
    return SocketToken(token=token, key=key, expires_at=timezone.now() + timedelta(seconds=ttl), expires_in=ttl)


async def socket_token_redeem(redis_client: aioredis.Redis, token: str) -> SocketGrant | None:
    """Spend a token: its grant, or None for one that is malformed, unknown, expired or already used."""
    if not token.startswith(SOCKET_TOKEN_PREFIX) or len(token) > _TOKEN_MAX_LENGTH:
        return None
    raw = await redis_client.getdel(_redis_key(token))
    if raw is None:
        return None
    grant = json.loads(raw)
    return SocketGrant(key_hash=str(grant["key_hash"]), organization_id=int(grant["organization_id"]))
