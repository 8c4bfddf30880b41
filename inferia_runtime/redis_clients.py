"""Process-wide Redis clients for counters, caches and streams (the cache database, not the broker's)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)
_LISTENER_RETRY_S = 0.5


@cache
def sync_redis() -> redis.Redis:
    """For Django views, Celery tasks and management commands."""
    return redis.Redis.from_url(settings.CACHE_REDIS_URL, health_check_interval=30)


def gateway_redis_options() -> dict[str, Any]:
    """Connection options for the gateway's request-path Redis clients: every connect and every reply is bounded by
    INFERIA_REDIS_TIMEOUT_SECONDS and a timeout is never retried, so a stalled Redis costs a request one timeout.
    A broken connection (Redis restarted) is retried once at once, on a fresh one: service resumes with no error.
    Not for pub/sub listeners, which wait on an idle connection for as long as nothing is published."""
    timeout = settings.INFERIA_REDIS_TIMEOUT_SECONDS
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


class GatewayRedis(aioredis.Redis):
    """The request path's client. Once a command has timed out, the commands that follow within one timeout fail
    at once instead of each waiting out its own: a request makes several Redis calls (key, limits, usage), and an
    outage must cost it one timeout, not one per call. The first command after that period tries Redis again."""

    _stalled_until = 0.0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if self._stalled_until and time.monotonic() < self._stalled_until:
            raise redis.ConnectionError("Redis did not answer in time a moment ago; not waiting on it again yet")
        try:
            return await super().execute_command(*args, **options)
        except redis.TimeoutError:
            self._stalled_until = time.monotonic() + settings.INFERIA_REDIS_TIMEOUT_SECONDS
            raise


def listener_redis_options() -> dict[str, Any]:
    """For a pub/sub listener: a bounded connect, but no read timeout (a quiet channel is not a failure)."""
    return {"socket_connect_timeout": settings.INFERIA_REDIS_TIMEOUT_SECONDS, "socket_timeout": None}


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
