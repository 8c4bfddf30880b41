"""Which vector stores a key may search, remembered for a moment per process (per event loop, like the key cache).

Searching and retrieval ask it on every request; without it each asked PostgreSQL twice (the key's row and the
stores through `.restrict()`), which cost as much as the query's embedding. An answer is kept STORE_ACCESS_TTL_S
at most, and a key's answers are dropped as soon as the key changes (its revocation, new scopes or stores reach
every process through the gateway's invalidation channel). Only stores found are kept: a store created a moment
after a miss is found at once. What the short life bounds: a membership ended, or a store renamed, re-embedded or
deleted, reaches searches within that time (a deleted store's chunks are gone with it: such a search finds nothing).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from apps.keys.selectors import KeyPrincipal
from apps.knowledge.models import VectorStore

STORE_ACCESS_TTL_S = 1.0
MAX_ENTRIES = 10_000

Lookup = Callable[[KeyPrincipal, list[str]], Awaitable[list[VectorStore]]]


class StoreAccessCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[int, str], tuple[VectorStore, float]] = {}

    async def stores(self, principal: KeyPrincipal, ids: Sequence[str], lookup: Lookup) -> list[VectorStore]:
        """The stores of `ids` the key may search, in that order; `lookup` asks the database for those not kept."""
        now = time.monotonic()
        found: dict[str, VectorStore] = {}
        missing: list[str] = []
        for store_id in ids:
            entry = self._entries.get((principal.key_id, store_id))
            if entry is not None and entry[1] > now:
                found[store_id] = entry[0]
            else:
                missing.append(store_id)
        if missing:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            until = time.monotonic() + STORE_ACCESS_TTL_S
            for store in await lookup(principal, missing):
                found[store.public_id] = store
                self._entries[(principal.key_id, store.public_id)] = (store, until)
        return [found[store_id] for store_id in ids if store_id in found]

    def forget_key(self, key_id: int) -> None:
        for entry in [entry for entry in self._entries if entry[0] == key_id]:
            del self._entries[entry]

    def clear(self) -> None:
        self._entries.clear()
