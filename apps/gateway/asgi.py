"""`gateway_app`: the ASGI application for `/v1/...`, one consumer per endpoint (see inferia_site/asgi.py)."""

from __future__ import annotations

from typing import Any

from apps.gateway.consumers import (
    ChatCompletionsConsumer,
    CompletionsConsumer,
    EmbeddingsConsumer,
    ModelsConsumer,
    NotFoundConsumer,
)

_EXACT = {
    "/v1/chat/completions": ChatCompletionsConsumer.as_asgi(),
    "/v1/completions": CompletionsConsumer.as_asgi(),
    "/v1/embeddings": EmbeddingsConsumer.as_asgi(),
    "/v1/models": ModelsConsumer.as_asgi(),
}
_MODELS = _EXACT["/v1/models"]
_NOT_FOUND = NotFoundConsumer.as_asgi()


async def gateway_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Dispatch by path: a dict lookup, then the one prefix (`/v1/models/{id}`, where ids may contain slashes)."""
    path = scope["path"]
    app = _EXACT.get(path.rstrip("/") if path.endswith("/") else path)
    if app is None:
        app = _MODELS if path.startswith("/v1/models/") else _NOT_FOUND
    await app(scope, receive, send)
