"""Prompt templates cached in each gateway process, for rendering on the `/v1` hot path without the ORM.

A version never changes, so a compiled `name@3` stays cached (least recently used ones are dropped past
`VERSIONS_MAX`). What `name` / `name@latest` means does change: that answer is kept `LATEST_TTL_S` seconds, and
dropped at once when the write services publish `<organization id>:<name>` on `TEMPLATE_CHANNEL` (a new version, or
the template deleted). A gateway that already listens to Redis subscribes to `TEMPLATE_CHANNEL` too and passes each
message to `TemplateCache.invalidate`; otherwise `TemplateCache.listen` does it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from typing import Any

import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async

from apps.policies.prompts.rendering import (
    CompiledTemplate,
    RenderedTemplate,
    template_compiled_render,
    template_ref_parse,
)
from inferia_runtime.redis_clients import channel_listen, sync_redis

logger = logging.getLogger(__name__)

TEMPLATE_CHANNEL = "inferia:templates:invalidate"
INVALIDATE_ALL = "*"
LATEST_TTL_S = 5.0
VERSIONS_MAX = 2048


def template_cache_publish(*, organization_id: int, name: str) -> None:
    """Tell every gateway that `name`'s latest version changed (or it is gone). Call after commit. A failure is
    logged, not raised: the change is committed and `LATEST_TTL_S` bounds staleness."""
    try:
        sync_redis().publish(TEMPLATE_CHANNEL, f"{organization_id}:{name}")
    except redis.RedisError:
        logger.exception("could not publish a prompt template change (%s:%s)", organization_id, name)


def _load(*, organization_id: int, name: str, version: int | None) -> CompiledTemplate:
    from apps.policies.prompts.selectors import prompt_template_compiled_get

    return prompt_template_compiled_get(organization_id=organization_id, name=name, version=version)


class TemplateCache:
    """One event loop's compiled template versions, and what `latest` currently is per template name."""

    def __init__(self, *, latest_ttl_s: float = LATEST_TTL_S, versions_max: int = VERSIONS_MAX) -> None:
        self._latest_ttl_s = latest_ttl_s
        self._versions_max = versions_max
        self._versions: OrderedDict[tuple[int, str, int], CompiledTemplate] = OrderedDict()
        self._latest: dict[tuple[int, str], tuple[int, float]] = {}
        # Applied invalidations. A load that began before one must not store what `latest` was then.
        self.invalidations = 0
        self.database_reads = 0  # for tests and metrics

    async def get(self, *, organization_id: int, name: str, version: int | None) -> CompiledTemplate:
        """The compiled version (None: the latest), from memory when known. Raises `TemplateNotFound`."""
        if version is None:
            latest = self._latest.get((organization_id, name))
            if latest is not None and latest[1] > time.monotonic():
                version = latest[0]
        if version is not None:
            compiled = self._versions.get((organization_id, name, version))
            if compiled is not None:
                self._versions.move_to_end((organization_id, name, version))
                return compiled
        invalidations = self.invalidations
        self.database_reads += 1
        loaded: CompiledTemplate = await database_sync_to_async(_load)(
            organization_id=organization_id, name=name, version=version
        )
        if invalidations == self.invalidations:
            self._versions[(organization_id, name, loaded.version)] = loaded
            while len(self._versions) > self._versions_max:
                self._versions.popitem(last=False)
            if version is None:
                self._latest[(organization_id, name)] = (loaded.version, time.monotonic() + self._latest_ttl_s)
        return loaded

    async def render(self, *, organization_id: int, ref: str, variables: dict[str, Any] | None) -> RenderedTemplate:
        """`template_render`, from this cache."""
        name, version = template_ref_parse(ref)
        compiled = await self.get(organization_id=organization_id, name=name, version=version)
        return template_compiled_render(compiled, variables)

    def invalidate(self, message: str) -> None:
        """Apply one published message: `<organization id>:<name>` (that template's `latest` and versions: a
        deleted template's name may be reused, numbered from 1 again) or `*` (everything)."""
        self.invalidations += 1
        raw_org, _, name = message.partition(":")
        try:
            organization_id = int(raw_org)
        except ValueError:
            organization_id = None
        if message == INVALIDATE_ALL or organization_id is None or not name:
            self._latest.clear()
            self._versions.clear()
            return
        self._latest.pop((organization_id, name), None)
        # A deleted template's name can be reused: its old numbers must not answer for the new one.
        for key in [key for key in self._versions if key[0] == organization_id and key[1] == name]:
            del self._versions[key]

    def clear(self) -> None:
        self.invalidate(INVALIDATE_ALL)

    async def listen(self, client: aioredis.Redis, ready: asyncio.Event | None = None) -> None:
        """Apply published invalidations until cancelled, resubscribing (from an empty cache) after a lost
        connection. Only for a process with no Redis listener of its own."""
        await channel_listen(
            client, TEMPLATE_CHANNEL, on_message=self.invalidate, on_subscribed=self.clear, ready=ready
        )


_loop_caches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TemplateCache] = weakref.WeakKeyDictionary()


def template_cache_for_loop() -> TemplateCache:
    """The running event loop's default cache (without a listener: `latest` is then at most `LATEST_TTL_S` old)."""
    loop = asyncio.get_running_loop()
    cache = _loop_caches.get(loop)
    if cache is None:
        cache = _loop_caches[loop] = TemplateCache()
    return cache


async def template_render_async(
    *,
    organization_id: int,
    ref: str,
    variables: dict[str, Any] | None,
    cache: TemplateCache | None = None,
) -> RenderedTemplate:
    """Render an organisation's template `ref` (`"name"`, `"name@latest"`, `"name@3"`) for the gateway: no database
    access once the version is cached. Pass the gateway runtime's `cache` (whose listener applies
    `TEMPLATE_CHANNEL`); without one, the loop's default cache is used. Raises `TemplateRefInvalid` (400),
    `TemplateNotFound` (404), `TemplateVariablesInvalid` (400): all `PolicyDenied`."""
    return await (cache or template_cache_for_loop()).render(
        organization_id=organization_id, ref=ref, variables=variables
    )
