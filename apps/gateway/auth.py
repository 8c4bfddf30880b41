"""Who is calling: the key in `Authorization: Bearer ...`, looked up in process memory, then Redis, then PostgreSQL.

Misses are cached too (negatively, briefly), so a flood of invalid keys never reaches PostgreSQL more than once per
key per cache period, and database lookups run a few at a time at most. A revocation reaches every process at once
through Redis pub/sub (`apps.keys.cache`), which drops the in-memory copy; the Redis copy becomes a tombstone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings

from apps.keys.cache import INVALIDATE_ALL, NEGATIVE_VALUE, principal_cache_key
from apps.keys.selectors import KeyPrincipal, api_key_principal_get

logger = logging.getLogger(__name__)

KEY_PREFIX = b"sk-inf-"
_MAX_KEY_LENGTH = 200
# How long Redis keeps a principal; a revocation replaces it with a tombstone at once, so this only bounds memory.
REDIS_PRINCIPAL_TTL_S = 300
# The in-process caches are cleared wholesale past this size rather than evicting one by one (keeps lookups cheap).
MAX_ENTRIES = 100_000
_DB_LOOKUPS_AT_ONCE = 4


def bearer_secret(authorization: bytes | None) -> str | None:
    """The key in an `Authorization` header value, or None when it is missing or cannot be one of ours."""
    if not authorization or authorization[:7].lower() != b"bearer ":
        return None
    secret = authorization[7:].strip()
    if not secret.startswith(KEY_PREFIX) or len(secret) > _MAX_KEY_LENGTH:
        return None
    try:
        return secret.decode("ascii")
    except UnicodeDecodeError:
        return None


def secret_hash_of(secret: str) -> str:
    """The same hash as `apps.keys.services.hash_key` (kept here to avoid importing the write side)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyCache:
    """One process's (one event loop's) key cache in front of Redis and PostgreSQL."""

    def __init__(self, redis_client: aioredis.Redis) -> None:
        self._redis = redis_client
        self._positive: dict[str, tuple[KeyPrincipal, float]] = {}
        self._negative: dict[str, float] = {}
        # Bumped by every invalidation: a lookup that started before one must not put its (stale) answer in memory.
        self._generation = 0
        self._db_slots = asyncio.Semaphore(_DB_LOOKUPS_AT_ONCE)
        self.database_lookups = 0  # for tests and metrics: how often a lookup reached PostgreSQL

    async def principal(self, secret: str) -> KeyPrincipal | None:
        """The usable key's principal, or None for a key that is unknown, revoked, expired or of an inactive org."""
        return await self.principal_of_hash(secret_hash_of(secret))

    async def principal_of_hash(self, secret_hash: str) -> KeyPrincipal | None:
        """`principal`, for a key known by its hash (a socket token's key: the secret never reaches the gateway)."""
        now = time.monotonic()
        cached = self._positive.get(secret_hash)
        if cached is not None and cached[1] > now:
            principal = cached[0]
            if principal.expires_at is not None and principal.expires_at <= time.time():
                return None
            return principal
        negative_until = self._negative.get(secret_hash)
        if negative_until is not None and negative_until > now:
            return None
        return await self._lookup(secret_hash)

    def invalidate(self, secret_hash: str) -> None:
        """Forget one key (or all, for `INVALIDATE_ALL`), in this process."""
        self._generation += 1
        if secret_hash == INVALIDATE_ALL:
            self._positive.clear()
            self._negative.clear()
        else:
            self._positive.pop(secret_hash, None)
            self._negative.pop(secret_hash, None)

    def clear(self) -> None:
        self.invalidate(INVALIDATE_ALL)

    def key_id_of(self, secret_hash: str) -> int | None:
        """The id of a key this process holds in memory (for dropping what else was cached about it)."""
        cached = self._positive.get(secret_hash)
        return cached[0].key_id if cached is not None else None

    async def _lookup(self, secret_hash: str) -> KeyPrincipal | None:
        generation = self._generation
        redis_key = principal_cache_key(secret_hash)
        principal: KeyPrincipal | None
        try:
            raw = await self._redis.get(redis_key)
        except redis.RedisError:
            logger.warning("Redis unavailable for key lookups; asking PostgreSQL", exc_info=True)
            raw = None
        if raw is not None:
            principal = None if raw == NEGATIVE_VALUE else KeyPrincipal.from_json_dict(json.loads(raw))
        else:
            async with self._db_slots:
                self.database_lookups += 1
                principal = await database_sync_to_async(api_key_principal_get)(secret_hash=secret_hash)
            await self._share(redis_key, principal)
        if generation == self._generation:
            self._remember(secret_hash, principal)
        if principal is not None and principal.expires_at is not None and principal.expires_at <= time.time():
            return None
        return principal

    async def _share(self, redis_key: str, principal: KeyPrincipal | None) -> None:
        # NX: never overwrite what is there, in particular a revocation's tombstone written while we were reading.
        try:
            if principal is None:
                ttl = max(1, int(settings.INFERIA_KEY_NEGATIVE_CACHE_SECONDS))
                await self._redis.set(redis_key, NEGATIVE_VALUE, ex=ttl, nx=True)
            else:
                await self._redis.set(
                    redis_key, json.dumps(principal.as_json_dict()), ex=REDIS_PRINCIPAL_TTL_S, nx=True
                )
        except redis.RedisError:
            logger.warning("could not share a key lookup through Redis")

    def _remember(self, secret_hash: str, principal: KeyPrincipal | None) -> None:
        now = time.monotonic()
        if principal is None:
            if len(self._negative) >= MAX_ENTRIES:
                self._negative.clear()
            self._negative[secret_hash] = now + settings.INFERIA_KEY_NEGATIVE_CACHE_SECONDS
        else:
            if len(self._positive) >= MAX_ENTRIES:
                self._positive.clear()
            self._positive[secret_hash] = (principal, now + settings.INFERIA_KEY_CACHE_SECONDS)
