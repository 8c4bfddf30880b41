"""`gateway_app`: the ASGI application for `/v1/...` and `/ollama/...`, one consumer per endpoint (see
inferia_site/asgi.py)."""

from __future__ import annotations

from typing import Any

from apps.gateway.consumers import (
    ChatCompletionsConsumer,
    CompletionsConsumer,
    CountTokensConsumer,
    EmbeddingsConsumer,
    MessagesConsumer,
    ModelsConsumer,
    NotFoundConsumer,
    ResponsesConsumer,
    StoredResponseConsumer,
    VectorStoreSearchConsumer,
)
from apps.gateway.ollama_consumers import NOT_FOUND as OLLAMA_NOT_FOUND
from apps.gateway.ollama_consumers import PREFIX as OLLAMA_PREFIX
from apps.gateway.ollama_consumers import ROUTES as OLLAMA_ROUTES
from apps.gateway.vector_search import search_store_id

_EXACT = {
    "/v1/chat/completions": ChatCompletionsConsumer.as_asgi(),
    "/v1/completions": CompletionsConsumer.as_asgi(),
    "/v1/embeddings": EmbeddingsConsumer.as_asgi(),
    "/v1/messages": MessagesConsumer.as_asgi(),
    "/v1/messages/count_tokens": CountTokensConsumer.as_asgi(),
    "/v1/models": ModelsConsumer.as_asgi(),
    "/v1/responses": ResponsesConsumer.as_asgi(),
    **OLLAMA_ROUTES,
}
_MODELS = _EXACT["/v1/models"]
_NOT_FOUND = NotFoundConsumer.as_asgi()
_SEARCH = VectorStoreSearchConsumer.as_asgi()
_STORED_RESPONSE = StoredResponseConsumer.as_asgi()


async def gateway_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Dispatch by path: a dict lookup, then the patterns (`/v1/models/{id}`, where ids may contain slashes,
    `/v1/responses/{id}`, `/v1/responses/{id}/input_items` and `/v1/vector_stores/{id}/search`)."""
    path = scope["path"]
    app = _EXACT.get(path.rstrip("/") if path.endswith("/") else path)
    if app is None:
        if path.startswith("/v1/models/"):
            app = _MODELS
        elif path.startswith("/v1/responses/") and _stored_response_path(path[len("/v1/responses/") :]):
            app = _STORED_RESPONSE
        elif path.startswith(OLLAMA_PREFIX):
            app = OLLAMA_NOT_FOUND
        else:
            app = _SEARCH if search_store_id(path) is not None else _NOT_FOUND
    await app(scope, receive, send)


def _stored_response_path(rest: str) -> bool:
    """`{id}` or `{id}/input_items`, with a non-empty id."""
    response_id, slash, listing = rest.partition("/")
    return bool(response_id) and (not slash or listing == "input_items")
