"""What the gateway keeps per process (strictly: per event loop): the pooled upstream HTTP client, the Redis client,
the key cache, the catalog, the router and the background tasks that keep them fresh.

Created on the first request of a loop. Background tasks: a Redis pub/sub listener that applies key revocations
and catalog changes at once, and a refresher that reads the replicas' load from Redis about once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from django.conf import settings

from apps.compute.routing import replica_loads_read
from apps.compute.urlsafety import guarded_connector
from apps.gateway.auth import KeyCache
from apps.gateway.catalog import CATALOG_CHANNEL, CatalogCache
from apps.gateway.engine_stream import EngineStreams
from apps.gateway.metering import UsageAppender
from apps.gateway.router import Router
from apps.gateway.store_access import StoreAccessCache
from apps.keys.cache import INVALIDATE_ALL, INVALIDATION_CHANNEL
from apps.policies.cache import POLICY_CHANNEL, PolicyCache
from apps.policies.prompts.cache import TEMPLATE_CHANNEL, TemplateCache
from inferia_runtime.redis_clients import (
    GatewayRedis,
    async_pool_from_url,
    gateway_redis_options,
    listener_redis_options,
)
from inferia_runtime.redis_pipe import RedisPipe

logger = logging.getLogger(__name__)

LOAD_REFRESH_INTERVAL_S = 1.0
REDIS_CONNECTIONS = 64
_LISTENER_RETRY_S = 0.5
_KEYS_CHANNEL = INVALIDATION_CHANNEL.encode()
_POLICY_CHANNEL = POLICY_CHANNEL.encode()
_TEMPLATE_CHANNEL = TEMPLATE_CHANNEL.encode()
_CLOSE_TIMEOUT_S = 2.0


def upstream_session(*, guarded: bool = False) -> aiohttp.ClientSession:
    """The pooled keep-alive client for all upstream calls of a loop. No per-request connections: the pool has
    no global cap (each engine limits itself) and keeps idle connections INFERIA_UPSTREAM_KEEPALIVE_SECONDS.

    `guarded`: for external deployments, whose endpoints users supply: every connection (redirects included) is
    refused unless the addresses it goes to are public, or INFERIA_UPSTREAM_ALLOW_PRIVATE allows private ones."""
    options: dict[str, Any] = {
        "limit": 0,
        "keepalive_timeout": settings.INFERIA_UPSTREAM_KEEPALIVE_SECONDS,
        "ttl_dns_cache": 300,
        "enable_cleanup_closed": True,
    }
    connector = guarded_connector(**options) if guarded else aiohttp.TCPConnector(**options)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class GatewayRuntime:
    """One event loop's gateway state."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # A dedicated client (not the shared one in redis_clients) so that closing the runtime closes only its own.
        # A blocking pool: under a burst, requests wait a moment for a connection instead of failing.
        pool = async_pool_from_url(
            settings.CACHE_REDIS_URL,
            max_connections=REDIS_CONNECTIONS,
            blocking_timeout=5,
            health_check_interval=30,
            **gateway_redis_options(),
        )
        self.redis = GatewayRedis(connection_pool=pool)
        # The listener's own connection: its reads wait for as long as nothing is published, which the request
        # path's timeouts would take for an outage (and start every cache over).
        self._listener_redis: aioredis.Redis = aioredis.Redis.from_pool(
            async_pool_from_url(settings.CACHE_REDIS_URL, health_check_interval=30, **listener_redis_options())
        )
        self.http = upstream_session()
        # Streams the fast relay forwards (see engine_stream.py), kept alive like `http`'s; None: it is turned off.
        self.engine_streams: EngineStreams | None = (
            EngineStreams(settings.INFERIA_UPSTREAM_KEEPALIVE_SECONDS) if settings.INFERIA_GATEWAY_FAST_RELAY else None
        )
        self._guarded_http: aiohttp.ClientSession | None = None  # made on the first external request
        # The request path's frequent writes (usage appends, limits), pipelined on one connection.
        self.redis_pipe = RedisPipe(self.redis)
        self.usage = UsageAppender(self.redis, self.redis_pipe)
        self.keys = KeyCache(self.redis)
        self.policies = PolicyCache()
        self.templates = TemplateCache()
        self.stores = StoreAccessCache()
        self.catalog = CatalogCache()
        self.router = Router()
        self.in_flight = 0
        self.listening = asyncio.Event()
        self._tasks = [
            loop.create_task(self._listen(), name="inferia-gateway-invalidations"),
            loop.create_task(self._refresh_load(), name="inferia-gateway-replica-load"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        # Bounded: a background task stuck in a Redis call must not hold up a shutdown.
        await asyncio.wait(self._tasks, timeout=_CLOSE_TIMEOUT_S)
        await self.http.close()
        if self.engine_streams is not None:
            self.engine_streams.close()
        if self._guarded_http is not None:
            await self._guarded_http.close()
        self.redis_pipe.close()
        await self.redis.aclose()
        await self._listener_redis.aclose()

    def guarded_http(self) -> aiohttp.ClientSession:
        """The SSRF-guarded pooled client, for external deployments (Inferia's own replicas are trusted)."""
        if self._guarded_http is None:
            self._guarded_http = upstream_session(guarded=True)
        return self._guarded_http

    async def _listen(self) -> None:
        while True:
            pubsub = self._listener_redis.pubsub()
            try:
                await pubsub.subscribe(INVALIDATION_CHANNEL, CATALOG_CHANNEL, POLICY_CHANNEL, TEMPLATE_CHANNEL)
                # Whatever changed while we were not subscribed is unknown: start from clean caches.
                self.keys.clear()
                self.policies.clear()
                self.templates.clear()
                self.stores.clear()
                self.catalog.invalidate()
                self.listening.set()
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    if message["channel"] == _KEYS_CHANNEL:
                        self._key_changed(message["data"].decode())
                    elif message["channel"] == _POLICY_CHANNEL:
                        self.policies.invalidate(message["data"].decode())
                    elif message["channel"] == _TEMPLATE_CHANNEL:
                        self.templates.invalidate(message["data"].decode())
                    else:
                        self.catalog.invalidate()
                        self.catalog.reload_in_background()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.listening.clear()
                logger.warning("lost the Redis invalidation channel; resubscribing", exc_info=True)
                await asyncio.sleep(_LISTENER_RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    # redis-py leaves PubSub.aclose unannotated
                    await asyncio.wait_for(pubsub.aclose(), timeout=_CLOSE_TIMEOUT_S)  # type: ignore[no-untyped-call]

    def _key_changed(self, secret_hash: str) -> None:
        """A key changed (revoked, new scopes or allowed models): forget it and the policy compiled from it."""
        if secret_hash == INVALIDATE_ALL:
            self.policies.clear()
            self.stores.clear()
        else:
            key_id = self.keys.key_id_of(secret_hash)
            if key_id is not None:
                self.policies.invalidate(f"key:{key_id}")
                self.stores.forget_key(key_id)
        self.keys.invalidate(secret_hash)

    async def _refresh_load(self) -> None:
        while True:
            await asyncio.sleep(LOAD_REFRESH_INTERVAL_S)
            catalog = self.catalog.current
            if catalog is None or not catalog.replicas:
                continue
            try:
                replicas = list(catalog.replicas.values())
                loads = await replica_loads_read(client=self.redis, replica_ids=[replica.id for replica in replicas])
                for replica, load in zip(replicas, loads, strict=True):
                    if load is not None:
                        replica.running, replica.waiting, replica.kv_cache, replica.checked_at = load
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("could not read replica load from Redis", exc_info=True)


_runtimes: dict[asyncio.AbstractEventLoop, GatewayRuntime] = {}
_current: GatewayRuntime | None = None


def runtime() -> GatewayRuntime:
    """The calling loop's runtime, created on first use."""
    global _current
    loop = asyncio.get_running_loop()
    current = _current
    if current is not None and current.loop is loop:
        return current
    current = _runtimes.get(loop)
    if current is None:
        current = _runtimes[loop] = GatewayRuntime(loop)
    _current = current
    return current


async def runtime_close() -> None:
    """Close the calling loop's runtime (tests and shutdown); the next request makes a new one."""
    global _current
    loop = asyncio.get_running_loop()
    current = _runtimes.pop(loop, None)
    if _current is current:
        _current = None
    if current is not None:
        await current.close()
