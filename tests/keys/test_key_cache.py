"""The key caches' shared layer: a revocation leaves a tombstone in Redis and tells every gateway process."""

from __future__ import annotations

from apps.keys.cache import INVALIDATION_CHANNEL, NEGATIVE_VALUE, principal_cache_key
from apps.keys.selectors import api_key_principal_get
from apps.keys.services import api_key_create, api_key_revoke, hash_key
from tests.kit.waiting import eventually


def test_the_principal_of_a_usable_key_is_found_and_a_revoked_one_is_not(org, transactional_db):
    issued = api_key_create(organization=org, name="app", scopes=["inference"])
    principal = api_key_principal_get(secret_hash=hash_key(issued.secret))
    assert principal is not None
    assert principal.organization_slug == "acme"
    assert principal.scopes == frozenset({"inference"})
    api_key_revoke(key=issued.key)
    assert api_key_principal_get(secret_hash=hash_key(issued.secret)) is None


def test_revoking_a_key_tombstones_it_and_announces_it_after_commit(org, transactional_db, redis_cache):
    issued = api_key_create(organization=org, name="app", scopes=["inference"])
    secret_hash = hash_key(issued.secret)
    redis_cache.set(principal_cache_key(secret_hash), b"{}")
    pubsub = redis_cache.pubsub()
    pubsub.subscribe(INVALIDATION_CHANNEL)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"

    api_key_revoke(key=issued.key, reason="leaked")

    assert redis_cache.get(principal_cache_key(secret_hash)) == NEGATIVE_VALUE
    message = eventually(lambda: pubsub.get_message(timeout=0.1), timeout=2, interval=0, what="the invalidation")
    assert message["data"] == secret_hash.encode()
    pubsub.close()
