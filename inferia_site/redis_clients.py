"""Process-wide Redis clients for counters, caches and streams (the cache database, not the broker's)."""

from __future__ import annotations

from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings


@cache
def sync_redis() -> redis.Redis:
    """For Django views, Celery tasks and management commands."""
    return redis.Redis.from_url(settings.CACHE_REDIS_URL, health_check_interval=30)


_async_clients: dict[int, aioredis.Redis] = {}


def async_redis() -> aioredis.Redis:
    """For the gateway's event loop. redis.asyncio connections belong to one loop, so keep one client per loop."""
    import asyncio

    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(settings.CACHE_REDIS_URL, health_check_interval=30)
        _async_clients[loop_id] = client
    return client


def redis_ping() -> bool:
    try:
        return bool(sync_redis().ping())
    except redis.RedisError:
        return False
