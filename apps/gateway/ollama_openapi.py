"""`/ollama/openapi.json` and `/ollama/docs`: Ollama's API as Inferia serves it, described by django-ninja from the
very pydantic models the edge validates requests with (apps.gateway.ollama_schemas), as `/v1/openapi.json` describes
`/v1`.

The operations below exist to be described, never to run: inferia_site/asgi.py sends those paths to the gateway's
consumers (apps.gateway.ollama_consumers).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from pydantic import BaseModel

from apps.gateway.ollama_schemas import ChatRequest, EmbedRequest, GenerateRequest, ShowRequest
from apps.gateway.openapi import ApiKeyBearer


class OllamaError(BaseModel):
    """Ollama's error shape."""

    error: str


class TagList(BaseModel):
    models: list[dict[str, Any]]


class Version(BaseModel):
    version: str


class Embeddings(BaseModel):
    model: str
    embeddings: list[list[float]]


_ERRORS: dict[int, Any] = {code: OllamaError for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)}
# Ollama streams unless the request says `"stream": false`: a stream is newline-delimited JSON objects.
_STREAMED = {
    "responses": {
        "200": {
            "description": "One JSON object, or with `stream` (the default) newline-delimited JSON objects ending "
            'with the one that says `"done": true`.',
            "content": {"application/json": {"schema": {"type": "object"}}, "application/x-ndjson": {}},
        }
    }
}

api = NinjaAPI(
    title="Inferia's Ollama API",
    version="1",
    description=(
        "Ollama's API, served by Inferia's gateway: chat and generate as chat completions (a raw generate as a "
        "completion), embed as embeddings, tags and show from the models the key may use. The key goes as "
        '`Authorization: Bearer`; errors are Ollama\'s `{"error": "..."}`.'
    ),
    auth=ApiKeyBearer(),
    urls_namespace="ollama-openapi",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def _described_only() -> Any:
    # Never reached: inferia_site.asgi sends these paths to the gateway's consumers before Django sees them.
    raise Http404("served by the gateway's consumers")


@api.post("/api/chat", response={200: dict[str, Any], **_ERRORS}, summary="Chat", openapi_extra=_STREAMED)
def chat(request: HttpRequest, body: ChatRequest) -> Any:
    return _described_only()


@api.post("/api/generate", response={200: dict[str, Any], **_ERRORS}, summary="Generate", openapi_extra=_STREAMED)
def generate(request: HttpRequest, body: GenerateRequest) -> Any:
    return _described_only()


@api.post("/api/embed", response={200: Embeddings, **_ERRORS}, summary="Embeddings")
def embed(request: HttpRequest, body: EmbedRequest) -> Any:
    return _described_only()


@api.get("/api/tags", response={200: TagList, **_ERRORS}, summary="Models the key may use")
def tags(request: HttpRequest) -> Any:
    return _described_only()


@api.post("/api/show", response={200: dict[str, Any], **_ERRORS}, summary="One model the key may use")
def show(request: HttpRequest, body: ShowRequest) -> Any:
    return _described_only()


@api.get("/api/version", response={200: Version}, auth=None, summary="The Ollama version Inferia answers as")
def version(request: HttpRequest) -> Any:
    return _described_only()
