"""The gateway keeps which stores a key may search for a moment, and forgets them when the key changes."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.db import connections

from apps.gateway import store_access
from apps.gateway.retrieval import _stores_lookup
from apps.gateway.store_access import StoreAccessCache
from apps.keys.selectors import api_key_principal_get
from apps.keys.services import api_key_create, hash_key
from apps.knowledge import services
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _store(organization, name):
    return services.vector_store_create(
        organization=organization, embedding_model="kb-embed", dimensions=8, actor=None, name=name
    )


@pytest.fixture
def caller():
    organization = OrganizationFactory()
    issued = api_key_create(organization=organization, name="searcher", scopes=["inference"])
    return organization, api_key_principal_get(secret_hash=hash_key(issued.secret))


def _asked(cache, principal, ids, lookups):
    async def counted(principal, ids):
        lookups.append(list(ids))
        return await _stores_lookup(principal, ids)

    async def ask():
        try:
            return await cache.stores(principal, ids, counted)
        finally:
            await database_sync_to_async(connections.close_all)()  # the lookup thread's connection

    return [store.public_id for store in asyncio.run(ask())]


def test_a_second_search_within_the_moment_asks_nothing_and_a_key_change_asks_again(caller):
    organization, principal = caller
    store = _store(organization, "docs")
    cache, lookups = StoreAccessCache(), []

    assert _asked(cache, principal, [store.public_id], lookups) == [store.public_id]
    assert _asked(cache, principal, [store.public_id], lookups) == [store.public_id]
    assert lookups == [[store.public_id]]

    cache.forget_key(principal.key_id)
    assert _asked(cache, principal, [store.public_id], lookups) == [store.public_id]
    assert len(lookups) == 2


def test_answers_expire_and_a_store_not_found_is_not_remembered(caller, monkeypatch):
    organization, principal = caller
    cache, lookups = StoreAccessCache(), []
    assert _asked(cache, principal, ["vs_later"], lookups) == []

    store = _store(organization, "created after the miss")
    assert _asked(cache, principal, [store.public_id], lookups) == [store.public_id]
    monkeypatch.setattr(store_access, "STORE_ACCESS_TTL_S", 0.0)
    cache.forget_key(principal.key_id)
    _asked(cache, principal, [store.public_id], lookups)
    _asked(cache, principal, [store.public_id], lookups)
    assert len(lookups) == 4


def test_another_organisations_store_is_never_kept_for_the_key(caller):
    _, principal = caller
    foreign = _store(OrganizationFactory(), "theirs")
    cache, lookups = StoreAccessCache(), []
    assert _asked(cache, principal, [foreign.public_id], lookups) == []
    assert _asked(cache, principal, [foreign.public_id], lookups) == []
    assert len(lookups) == 2
