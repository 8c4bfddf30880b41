"""Metering on the hot path: one usage event per authenticated request, appended to a Redis stream before the
response ends.

The event's fields are usage's (`apps.usage.events`); the usage worker (`apps.usage.tasks.usage_flush`) turns them
into UsageRecord rows and hourly rollups. The event is one compact JSON field, so that the hot path pays for one
small XADD and nothing else.
"""

from __future__ import annotations

import logging

import redis
import redis.asyncio as aioredis
from django.conf import settings

from apps.usage.events import EVENT_FIELD, UsageEvent

logger = logging.getLogger(__name__)


async def usage_append(client: aioredis.Redis, event: UsageEvent) -> None:
    """Append the event to the usage stream. A Redis failure is logged and the response still completes."""
    try:
        await client.xadd(settings.INFERIA_USAGE_STREAM, {EVENT_FIELD: event.encoded()})
    except redis.RedisError:
        logger.error("usage event %s lost: Redis unavailable", event.request_id, exc_info=True)
