"""Searching vector stores for a text: the query embedded with each store's own model and key, through the gateway,
then ranked in PostgreSQL. What `POST /v1/vector_stores/{id}/search` and retrieval in a chat completion run, on the
event loop of the request, bounded in time (INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S) as a whole and in SQL.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import OperationalError
from psycopg.errors import QueryCanceled

from apps.compute.credentials import credentials_decrypt
from apps.knowledge.embedding import Embedded, EmbeddingError, embeddings_create
from apps.knowledge.ingestion import store_ingest_secret
from apps.knowledge.models import VectorStore
from apps.knowledge.search import ChunkHit, SearchPlan, search_plan, vector_store_search

QUERY_CHARS_MAX = 4096  # a search query is a question, not a document
QUERIES_MAX = 10


class SearchTimeout(EmbeddingError):
    def __init__(self, seconds: float) -> None:
        super().__init__(504, "timeout", f"the search took longer than {seconds:g} s")


def query_text(query: str | Sequence[str]) -> str:
    """One text for a query given as a string or a list of strings (OpenAI's search accepts both)."""
    parts = [query] if isinstance(query, str) else list(query)
    if not parts or len(parts) > QUERIES_MAX or not all(isinstance(part, str) and part.strip() for part in parts):
        raise EmbeddingError(400, "invalid_request_error", f"query must be 1 to {QUERIES_MAX} non-empty strings")
    text = "\n".join(parts)
    if len(text) > QUERY_CHARS_MAX or "\x00" in text:
        raise EmbeddingError(400, "invalid_request_error", f"query must be at most {QUERY_CHARS_MAX} characters")
    return text


@functools.lru_cache(maxsize=1024)
def _secret_decrypted(ciphertext: str) -> str:
    return str(credentials_decrypt(ciphertext).reveal()["secret"])


async def query_embed(store: VectorStore, query: str) -> Embedded:
    """The query's embedding with the store's model, requested with the store's own key.

    The key's secret is decrypted from the store row the caller already read, once per process; whether the key is
    still usable is for the gateway to say when it authenticates the request (a revocation reaches its caches at
    once). When it says no, the store gets a new key, as ingestion would give it, and the request is made again."""
    if store.ingest_key_secret:
        secret = _secret_decrypted(store.ingest_key_secret)
        try:
            return await embeddings_create(secret=secret, model=store.embedding_model, inputs=[query])
        except EmbeddingError as error:
            if error.status != 401:
                raise
    secret = await database_sync_to_async(store_ingest_secret)(store)
    return await embeddings_create(secret=secret, model=store.embedding_model, inputs=[query])


async def stores_search(
    *,
    stores: Sequence[VectorStore],
    query: str,
    max_num_results: int = 10,
    filters: dict[str, Any] | None = None,
    score_threshold: float = 0.0,
    include_flagged: bool = True,
) -> list[ChunkHit]:
    """The best chunks for `query` across `stores`, best first. Stores of one embedding model share one embedding
    of the query; scores (cosine similarity) are comparable across stores of the same model only, which is what
    merging them assumes."""
    timeout = settings.INFERIA_KNOWLEDGE_SEARCH_TIMEOUT_S

    def ranked(vectors: dict[str, list[float]], plans: list[SearchPlan]) -> list[ChunkHit]:
        hits: list[ChunkHit] = []
        for store, plan in zip(stores, plans, strict=True):
            hits += vector_store_search(
                store=store,
                vector=vectors[store.embedding_model],
                max_num_results=max_num_results,
                filters=filters,
                score_threshold=score_threshold,
                include_flagged=include_flagged,
                plan=plan,
            )
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:max_num_results]

    async def run() -> list[ChunkHit]:
        # The stores' files are read while the query is embedded: that read does not need the vector.
        planning = asyncio.ensure_future(
            database_sync_to_async(lambda: [search_plan(store, filters) for store in stores])()
        )
        try:
            vectors: dict[str, list[float]] = {}
            for store in stores:
                if store.embedding_model not in vectors:
                    vectors[store.embedding_model] = (await query_embed(store, query)).vectors[0]
            plans = await planning
        finally:
            if not planning.done():
                planning.cancel()
            elif not planning.cancelled():
                planning.exception()  # retrieved: an embedding failure is the one reported
        return await database_sync_to_async(ranked)(vectors, plans)

    try:
        return await asyncio.wait_for(run(), timeout)
    except (TimeoutError, QueryCanceled):
        raise SearchTimeout(timeout) from None
    except OperationalError as error:  # Django wraps psycopg's statement timeout
        if isinstance(error.__cause__, QueryCanceled):
            raise SearchTimeout(timeout) from None
        raise
