"""`POST /api/socket-tokens/` as a signed-in person: a token for a key they may change, never for another's or
another organisation's; the token is stored only as its hash, and spent once."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import redis.asyncio as aioredis
from django.conf import settings
from rest_framework.test import APIClient

from apps.keys.socket_tokens import socket_token_redeem
from tests.factories import api_key_issue

URL = "/api/socket-tokens/"


def signed_in(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_a_member_mints_a_token_for_their_own_key(org, member, redis_cache):
    own = api_key_issue(organization=org, owner=member).key

    response = signed_in(member).post(URL, {"key": own.pk, "ttl_seconds": 30}, format="json")

    assert response.status_code == 201
    token = response.json()["token"]
    assert (response.json()["key"], response.json()["expires_in"]) == (own.pk, 30)
    stored = [name.decode() for name in redis_cache.keys("inferia:socket-token:*")]
    assert stored == [f"inferia:socket-token:{hashlib.sha256(token.encode()).hexdigest()}"]
    assert 0 < redis_cache.ttl(stored[0]) <= 30

    async def redeem_twice():
        client = aioredis.Redis.from_url(settings.CACHE_REDIS_URL)
        try:
            return await socket_token_redeem(client, token), await socket_token_redeem(client, token)
        finally:
            await client.aclose()

    first, second = asyncio.run(redeem_twice())
    assert (first.key_hash, first.organization_id) == (own.secret_hash, org.pk)
    assert second is None


def test_a_member_cannot_mint_for_someone_elses_key_nor_another_organisations(org, member, outsider, other_org):
    service_key = api_key_issue(organization=org).key
    foreign = api_key_issue(organization=other_org, owner=outsider).key
    client = signed_in(member)

    assert client.post(URL, {"key": service_key.pk}, format="json").status_code in (403, 404)
    assert client.post(URL, {"key": foreign.pk}, format="json").status_code == 404
    missing = client.post(URL, {}, format="json")
    assert missing.status_code == 400
    assert "key" in missing.json()


@pytest.mark.parametrize("ttl", [0, 301])
def test_a_lifetime_outside_the_bounds_is_refused(org, member, ttl):
    own = api_key_issue(organization=org, owner=member).key
    response = signed_in(member).post(URL, {"key": own.pk, "ttl_seconds": ttl}, format="json")
    assert response.status_code == 400


def test_nobody_signed_in_gets_401_or_403():
    assert APIClient().post(URL, {}, format="json").status_code in (401, 403)
