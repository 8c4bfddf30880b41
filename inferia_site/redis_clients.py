"""Process-wide Redis clients for counters, caches and streams (the cache database, not the broker's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

logger = logging.getLogger(__name__)
_LISTENER_RETRY_S = 0.5


@cache
def sync_redis() -> redis.Redis:
    """For Django views, Celery tasks and management commands."""
    return redis.Redis.from_url(settings.CACHE_REDIS_URL, health_check_interval=30)


_async_clients: dict[int, aioredis.Redis] = {}


def async_redis() -> aioredis.Redis:
    """For the gateway's event loop. redis.asyncio connections belong to one loop, so keep one client per loop."""
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


async def channel_listen(
    client: aioredis.Redis,
    channel: str,
    *,
    on_message: Callable[[str], None],
    on_subscribed: Callable[[], None],
    ready: asyncio.Event | None = None,
) -> None:
    """Apply the messages published on `channel` until cancelled, resubscribing after a lost connection.
    `on_subscribed` runs after every (re)subscription: what was published meanwhile is lost, so caches start over."""
    while True:
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            on_subscribed()
            if ready is not None:
                ready.set()
            async for message in pubsub.listen():
                if message["type"] == "message":
                    data = message["data"]
                    on_message(data.decode() if isinstance(data, bytes) else str(data))
        except asyncio.CancelledError:
            raise
        except Exception:
            if ready is not None:
                ready.clear()
            logger.warning("lost the Redis channel %s; resubscribing", channel, exc_info=True)
            await asyncio.sleep(_LISTENER_RETRY_S)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
