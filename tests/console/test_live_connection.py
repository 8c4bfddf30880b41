"""The live pages' channel layer stays connected through quiet periods: a consumer blocks on Redis for a message for
longer than redis-py's default 5 s read timeout, and that wait must not end in a TimeoutError (which closed every
live deployment panel and made it reconnect every few seconds)."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

pytestmark = pytest.mark.slow

QUIET_SECONDS = 8  # longer than channels-redis' 5 s blocking pop and redis-py's 5 s default read timeout


async def test_a_quiet_channel_waits_without_a_redis_timeout_and_then_receives():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    receiving = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(QUIET_SECONDS)
    assert not receiving.done(), f"the wait ended during a quiet period: {receiving.exception()!r}"
    await layer.send(channel, {"type": "deployment.progress", "payload": {"state": "READY"}})
    message = await asyncio.wait_for(receiving, timeout=QUIET_SECONDS)
    assert message == {"type": "deployment.progress", "payload": {"state": "READY"}}
    await layer.flush()
