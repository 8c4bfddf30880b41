"""Fixtures for the policy tests: a team, keys in it, and the gateway's two ways to the counters database (an
asyncio client, and the pipe the limits go through)."""

from __future__ import annotations

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from django.conf import settings

from inferia_runtime.redis_clients import GatewayRedis, gateway_redis_options
from inferia_runtime.redis_pipe import RedisPipe


@pytest.fixture
def team(org):
    from apps.orgs.models import Team

    return Team.objects.create(organization=org, name="Research", slug="research")


@pytest.fixture
def team_key(org, team):
    from apps.keys.services import api_key_create

    return api_key_create(organization=org, team=team, name="team key", scopes=["inference"]).key


@pytest.fixture
def org_key(org):
    from apps.keys.services import api_key_create

    return api_key_create(organization=org, name="org key", scopes=["inference"]).key


@pytest_asyncio.fixture
async def aredis(redis_cache):
    """An asyncio client on the (emptied) counters database, closed after the test. A blocking pool, as a gateway
    should use: under a burst, requests wait for a connection instead of failing with "Too many connections"."""
    pool = aioredis.BlockingConnectionPool.from_url(settings.CACHE_REDIS_URL, max_connections=32, timeout=10)
    client = aioredis.Redis(connection_pool=pool)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def counters(redis_cache):
    """The pipe to the (emptied) counters database that the gateway's limits go through, closed after the test."""
    client = GatewayRedis.from_url(settings.CACHE_REDIS_URL, **gateway_redis_options())
    pipe = RedisPipe(client)
    yield pipe
    pipe.close()
    await client.aclose()
