"""Process-wide Redis clients for counters, caches and streams (the cache database, not the broker's), and the one
place that turns a Redis URL into a client: a `redis+sentinel://` URL (`inferia_runtime.redis_urls`) gives a client
of the master Sentinel names, which finds the new master by itself after a failover.
"""

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
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from inferia_runtime.redis_urls import SentinelTarget, is_sentinel_url, sentinel_target

logger = logging.getLogger(__name__)
_LISTENER_RETRY_S = 0.5


def _sentinel_options(target: SentinelTarget, options: dict[str, Any]) -> dict[str, Any]:
    """The sentinels get the same bounded socket timeouts as the master (a dead sentinel must not stall a lookup)."""
    return {key: value for key, value in options.items() if key.startswith("socket_")} | target.sentinel_kwargs()


def sync_pool_from_url(url: str, **options: Any) -> redis.ConnectionPool:
    """A connection pool for `url`: the usual one, or one that asks Sentinel where the master is."""
    if not is_sentinel_url(url):
        return redis.ConnectionPool.from_url(url, **options)
    target = sentinel_target(url)
    manager = redis.sentinel.Sentinel(target.sentinels, sentinel_kwargs=_sentinel_options(target, options))
    return redis.sentinel.SentinelConnectionPool(target.master_name, manager, **target.connection_kwargs(), **options)


def async_pool_from_url(url: str, *, blocking_timeout: float | None = None, **options: Any) -> aioredis.ConnectionPool:
    """The asyncio twin of `sync_pool_from_url`. `blocking_timeout`: without Sentinel, a pool whose callers wait up to
    that long for a free connection instead of failing (Sentinel's pool has no waiting variant)."""
    if not is_sentinel_url(url):
        if blocking_timeout is not None:
            return aioredis.BlockingConnectionPool.from_url(url, timeout=blocking_timeout, **options)
        return aioredis.ConnectionPool.from_url(url, **options)
    target = sentinel_target(url)
    manager = aiosentinel.Sentinel(target.sentinels, sentinel_kwargs=_sentinel_options(target, options))
    return aiosentinel.SentinelConnectionPool(target.master_name, manager, **target.connection_kwargs(), **options)


class CachePool(redis.ConnectionPool):
    """Django's Redis cache backend builds its pools with `pool_class.from_url`: this one understands Sentinel."""

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Any:
        return sync_pool_from_url(url, **kwargs)


def redis_epoch(client: redis.Redis) -> str:
    """The master's replication id: a new one after a failover (a promoted replica starts its own) or a restart."""
    info: dict[str, Any] = client.info("replication")
    return str(info.get("master_replid", ""))


def redis_failover_seen(client: redis.Redis, *, watcher: str) -> bool:
    """True once per `watcher` after the master changed (a failover, or a restart that may have lost data): the
    caller then repairs what a lost write could have left behind. Atomic across processes: one of them sees it."""
    epoch = redis_epoch(client)
    previous = client.set(f"inferia:redis-epoch:{watcher}", epoch, get=True)
    # No previous epoch: the first check ever, or a Redis that lost everything; repairing is harmless either way.
    return previous is None or previous.decode() != epoch


@cache
def sync_redis() -> redis.Redis:
    """For Django views, Celery tasks and management commands."""
    return redis.Redis.from_pool(sync_pool_from_url(settings.CACHE_REDIS_URL, health_check_interval=30))


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
    outage must cost it one timeout, not one per call. The first command after that period tries Redis again. Its
    pipelined connection (`inferia_runtime.redis_pipe`) shares that state."""

    _stalled_until = 0.0

    def stall_check(self) -> None:
        """Raises while a command that timed out a moment ago says Redis is not answering."""
        if self._stalled_until and time.monotonic() < self._stalled_until:
            raise redis.ConnectionError("Redis did not answer in time a moment ago; not waiting on it again yet")

    def stall_mark(self) -> None:
        self._stalled_until = time.monotonic() + settings.INFERIA_REDIS_TIMEOUT_SECONDS

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.stall_check()
        try:
            return await super().execute_command(*args, **options)
        except redis.TimeoutError:
            self.stall_mark()
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
        client = aioredis.Redis.from_pool(async_pool_from_url(settings.CACHE_REDIS_URL, health_check_interval=30))
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
