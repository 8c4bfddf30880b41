"""Metering on the hot path: one usage event per authenticated request, appended to a Redis stream before the
response ends.

The event's fields are usage's (`apps.usage.events`); the usage worker (`apps.usage.tasks.usage_flush`) turns them
into UsageRecord rows and hourly rollups. The event is one compact JSON field, so that the hot path pays for one
small XADD and nothing else; without a replica to wait for, on the web process's one pipelined connection
(`inferia_runtime.redis_pipe`).

With a replica (Sentinel, or INFERIA_REDIS_WAIT_REPLICAS), the XADD is followed by a bounded WAIT on the same
connection, so that an event the master acknowledged is on a replica before the response ends and survives the
master's loss. An append that fails (the master died, the new one is not promoted yet) is tried again until
INFERIA_USAGE_APPEND_RETRY_SECONDS when the event is billed (the engine answered: tokens or money); a refusal's event
is not waited for, so that a refusal during an outage stays a prompt 503. Appending twice is harmless: records are
unique per request id.

While no replica acknowledges (it is down or far behind), each WAIT would cost a request its whole timeout (rounded
up by Redis to its timer, 100 ms by default): after one that came back short, appends skip the WAIT for
_REPLICA_MISSING_S and then try again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis
import redis.asyncio as aioredis
from django.conf import settings

from apps.gateway.metrics import USAGE_EVENTS_LOST
from apps.usage.events import EVENT_FIELD, UsageEvent
from inferia_runtime.redis_clients import GatewayRedis
from inferia_runtime.redis_pipe import RedisPipe, resp_command

logger = logging.getLogger(__name__)
_RETRY_PAUSE_S = 0.25
_REPLICA_MISSING_S = 1.0
_replica_missing_until = 0.0


class UsageAppender:
    """A web process's usage appends. Without a replica to wait for, they go through the process's pipelined
    connection (a fraction of a pooled client's CPU per append). With one, each takes a pooled connection of
    `client`: a WAIT holds its connection until a replica answers, and would hold up everything queued behind it on
    the shared one."""

    def __init__(self, client: GatewayRedis, pipe: RedisPipe) -> None:
        self.client = client
        self.pipe = pipe

    async def append(self, event: UsageEvent) -> None:
        """Append the event to the usage stream. A Redis failure is logged and the response still completes."""
        replicas = settings.INFERIA_REDIS_WAIT_REPLICAS
        if replicas:
            await usage_append_waited(self.client, event, replicas=replicas)
            return
        command = resp_command(b"XADD", settings.INFERIA_USAGE_STREAM, b"*", EVENT_FIELD, event.encoded())
        try:
            await self.pipe.execute(command)
        except redis.RedisError:
            usage_event_lost(event)


def usage_event_lost(event: UsageEvent) -> None:
    logger.error("usage event %s lost: Redis unavailable", event.request_id, exc_info=True)
    USAGE_EVENTS_LOST.inc()


async def usage_append_waited(client: aioredis.Redis, event: UsageEvent, *, replicas: int) -> None:
    """Append the event and wait for `replicas` replicas to have it, trying a billed event again while Redis is
    unavailable (see the module's docstring)."""
    global _replica_missing_until
    billed = bool(event.prompt_tokens or event.completion_tokens or event.cost_micros)
    deadline = time.monotonic() + (settings.INFERIA_USAGE_APPEND_RETRY_SECONDS if billed else 0.0)
    while True:
        try:
            if time.monotonic() < _replica_missing_until:
                await client.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: event.encoded()})
                return
            acknowledged = await usage_append_replicated(client, event, replicas=replicas)
        except redis.RedisError:
            if time.monotonic() + _RETRY_PAUSE_S > deadline:
                usage_event_lost(event)
                return
            await asyncio.sleep(_RETRY_PAUSE_S)
            continue
        if acknowledged < replicas:
            # Stored on the master only: lost just if the master dies before its replica catches up.
            _replica_missing_until = time.monotonic() + _REPLICA_MISSING_S
            logger.warning("usage event %s reached %d of %d replicas in time", event.request_id, acknowledged, replicas)
        return


async def usage_append_replicated(client: aioredis.Redis, event: UsageEvent, *, replicas: int) -> int:
    """XADD then WAIT on one connection (a pipeline): how many replicas have the event (and all before it)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: event.encoded()})
        pipe.wait(replicas, settings.INFERIA_REDIS_WAIT_MS)
        _id, acknowledged = await pipe.execute()
    return int(acknowledged)
