"""Gateway services run outside the hot path: making every gateway look an organisation's keys up again."""

from __future__ import annotations

import logging

import redis

from apps.keys.cache import NEGATIVE_VALUE, TOMBSTONE_TTL_S, key_cache_purge_all, principal_cache_key
from apps.keys.models import ApiKey
from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)


def organization_keys_purge(*, organization_id: int, active: bool) -> None:
    """Make every gateway look an organisation's keys up again after it was deactivated (its keys then fail) or
    reactivated. Deactivation leaves tombstones in Redis, so that no gateway can put a stale principal back; then
    one message clears every process's in-memory keys. A Redis failure is logged: the caches' TTLs bound it."""
    hashes = list(ApiKey.objects.filter(organization_id=organization_id).values_list("secret_hash", flat=True))
    try:
        client = sync_redis()
        with client.pipeline(transaction=False) as pipe:
            for secret_hash in hashes:
                if active:
                    pipe.delete(principal_cache_key(secret_hash))
                else:
                    pipe.set(principal_cache_key(secret_hash), NEGATIVE_VALUE, ex=TOMBSTONE_TTL_S)
            pipe.execute()
    except redis.RedisError:
        logger.exception("could not purge the keys of organisation %s from Redis", organization_id)
    key_cache_purge_all()
