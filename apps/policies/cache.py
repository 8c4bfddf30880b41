"""Effective policies cached in each gateway process, dropped everywhere within a second of a change.

Write services publish on `POLICY_CHANNEL` after commit: `org:<id>` when anything of an organisation changed (a
policy of any level, or a profile one of them uses), `*` when a platform profile changed. Each process's
`PolicyCache` drops the matching entries; the next request of such a key reads the database once (concurrent
requests for the same key share that read). The TTL bounds staleness if a message is ever missed.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async

from apps.policies.effective import EffectivePolicy
from apps.policies.selectors import policy_effective_for
from inferia_runtime.redis_clients import channel_listen, sync_redis

logger = logging.getLogger(__name__)

POLICY_CHANNEL = "inferia:policies:invalidate"
INVALIDATE_ALL = "*"
CACHE_TTL_S = 60.0


def policy_cache_publish(*, organization_id: int | None) -> None:
    """Tell every gateway process that an organisation's policies changed (None: everything). Call after commit.
    A failure is logged, not raised: the change is committed and the caches' TTL bounds staleness."""
    message = INVALIDATE_ALL if organization_id is None else f"org:{organization_id}"
    try:
        sync_redis().publish(POLICY_CHANNEL, message)
    except redis.RedisError:
        logger.exception("could not publish a policy change (%s)", message)


class PolicyCache:
    """One event loop's effective policies, by key id."""

    def __init__(self, ttl_s: float = CACHE_TTL_S) -> None:
        self._ttl_s = ttl_s
        self._entries: dict[int, tuple[EffectivePolicy, float]] = {}
        self._loading: dict[int, asyncio.Future[EffectivePolicy]] = {}
        # Bumped by every invalidation: a read that began before one must not store its (possibly stale) result.
        self._generation = 0
        self.database_reads = 0  # for tests and metrics

    async def get(self, key_id: int) -> EffectivePolicy:
        """The key's effective policy, from memory when fresh. Raises `PolicyKeyNotFound` for a deleted key."""
        entry = self._entries.get(key_id)
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        pending = self._loading.get(key_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[EffectivePolicy] = asyncio.get_running_loop().create_future()
        self._loading[key_id] = future
        generation = self._generation
        try:
            self.database_reads += 1
            policy: EffectivePolicy = await database_sync_to_async(policy_effective_for)(key_id=key_id)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters (if any) get it, nobody else should be warned
            raise
        finally:
            self._loading.pop(key_id, None)
        if generation == self._generation:
            self._entries[key_id] = (policy, time.monotonic() + self._ttl_s)
        future.set_result(policy)
        return policy

    def invalidate(self, message: str) -> None:
        """Apply one invalidation message (`*`, `org:<id>` or `key:<id>`)."""
        self._generation += 1
        if message == INVALIDATE_ALL:
            self._entries.clear()
            return
        kind, _, raw_id = message.partition(":")
        try:
            target = int(raw_id)
        except ValueError:
            self._entries.clear()
            return
        if kind == "key":
            self._entries.pop(target, None)
        else:
            for key_id in [key for key, (policy, _) in self._entries.items() if policy.organization_id == target]:
                del self._entries[key_id]

    def clear(self) -> None:
        self.invalidate(INVALIDATE_ALL)

    async def listen(self, client: aioredis.Redis, ready: asyncio.Event | None = None) -> None:
        """Apply published invalidations until cancelled, resubscribing after a lost connection (and starting
        from an empty cache then, since changes may have been missed). For a gateway that has no listener of its
        own; one that has can subscribe to `POLICY_CHANNEL` and call `invalidate` with each message."""
        await channel_listen(client, POLICY_CHANNEL, on_message=self.invalidate, on_subscribed=self.clear, ready=ready)
