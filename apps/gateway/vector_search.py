"""`POST /v1/vector_stores/{id}/search`, served by the gateway rather than by Django like the rest of the vector-store
API (apps.knowledge.openai_api, which describes it in the `/v1` schema).

A search is a read on the inference path, as retrieval in a chat completion is, and it is paid for the same way: the
key from the gateway's caches, the stores the key may search (apps.gateway.store_access), the query's embedding
through the gateway in-process, then the ranking in PostgreSQL (apps.knowledge.search). Around the same ranking,
Django's middleware and thread hops cost 15 ms and more here (a store's retrieve alone takes 17-22 ms); this path
costs about 4 ms, the embedding included.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from apps.gateway import errors
from apps.gateway.errors import GatewayError
from apps.gateway.exchange import Exchange
from apps.gateway.pipeline import authenticate
from apps.gateway.retrieval import knowledge_refusal, stores_visible
from apps.gateway.runtime import runtime
from apps.gateway.schemas import validation_message
from apps.knowledge.openai_api import READ_SCOPES, SearchRequest, search_page
from apps.knowledge.retrieval import query_text, stores_search
from inferia_runtime.errors import DomainRefusal

PREFIX = "/v1/vector_stores/"
SUFFIX = "/search"
STORE_ID_MAX = 64


def search_store_id(path: str) -> str | None:
    """The store id of a search path (`/v1/vector_stores/{id}/search`), or None for any other path."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    store_id = path[len(PREFIX) : -len(SUFFIX)]
    return store_id if store_id and "/" not in store_id else None


def _request(body: bytes) -> SearchRequest:
    try:
        return SearchRequest.model_validate_json(body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None


async def vector_store_search(exchange: Exchange, store_id: str) -> None:
    try:
        principal = await authenticate(runtime(), exchange, scopes=READ_SCOPES)
        request = _request(exchange.body)
        stores = await stores_visible(principal, [store_id]) if len(store_id) <= STORE_ID_MAX else []
        if not stores:
            message = f"No vector store found with id '{store_id[:STORE_ID_MAX]}'."
            raise GatewayError(404, message, type="invalid_request_error", code="not_found")
        options = request.ranking_options
        hits = await stores_search(
            stores=stores,
            query=query_text(request.query),
            max_num_results=request.max_num_results,
            filters=request.filters,
            score_threshold=options.score_threshold if options is not None else 0.0,
        )
    except DomainRefusal as refusal:
        await exchange.respond_error(knowledge_refusal(refusal))
        return
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    page: dict[str, Any] = search_page(request.query, hits)
    await exchange.respond(200, json.dumps(page, ensure_ascii=False).encode())
