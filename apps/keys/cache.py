"""The shared (Redis) layer of the key cache and the invalidation channel every gateway process listens on.

The gateway keeps principals in process memory for speed; a revocation deletes the Redis entry and publishes the
key's hash so that every web process drops its copy at once (see `apps.gateway.auth`).
"""

from __future__ import annotations

import logging

import redis

from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

# Redis names. Values under PRINCIPAL_KEY are a principal as JSON, or NEGATIVE_VALUE for a key that is not usable.
PRINCIPAL_KEY = "inferia:key:{secret_hash}"
NEGATIVE_VALUE = b"-"
# A purged key's entry becomes a tombstone this long: gateways only ever add entries with SET NX, so a lookup that
# read the database just before the revocation committed cannot put the key back.
TOMBSTONE_TTL_S = 600
INVALIDATION_CHANNEL = "inferia:keys:invalidate"
# Published instead of a hash when every cached key must go (e.g. an organisation was deactivated).
INVALIDATE_ALL = "*"


def principal_cache_key(secret_hash: str) -> str:
    return PRINCIPAL_KEY.format(secret_hash=secret_hash)


def key_cache_purge(*, secret_hash: str, still_usable: bool = False) -> None:
    """Drop a key from every cache after a change to it is committed.

    A key that can no longer be used (revoked, expired early, deleted) leaves a tombstone in Redis; one that still
    works but changed (scopes, team, allowed models) is simply deleted and looked up again. Every gateway process
    drops its in-memory copy on the published message. A failure is logged, not raised: the change itself is done
    and the caches' TTL bounds how long a stale entry can live.
    """
    try:
        client = sync_redis()
        if still_usable:
            client.delete(principal_cache_key(secret_hash))
        else:
            client.set(principal_cache_key(secret_hash), NEGATIVE_VALUE, ex=TOMBSTONE_TTL_S)
        client.publish(INVALIDATION_CHANNEL, secret_hash)
    except redis.RedisError:
        logger.exception("could not purge key %s… from the caches", secret_hash[:8])


def key_cache_purge_all() -> None:
    """Tell every gateway process to forget all cached keys (Redis entries expire on their own)."""
    try:
        sync_redis().publish(INVALIDATION_CHANNEL, INVALIDATE_ALL)
    except redis.RedisError:
        logger.exception("could not purge the key caches")
