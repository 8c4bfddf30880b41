"""`/v1/openapi.json` and `/v1/docs`: the inference API described by django-ninja from the very pydantic models the
gateway's consumers validate requests with (apps.gateway.schemas), so the published schema cannot drift from what
is enforced.

Only these two paths reach Django (inferia_site/asgi.py sends every other `/v1` path to the gateway's consumers),
so the operations below exist to be described, never to run.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.security import HttpBearer
from pydantic import BaseModel

from apps.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


class ApiKeyBearer(HttpBearer):
    """`Authorization: Bearer sk-inf-...`: an Inferia API key with the `inference` scope."""

    def authenticate(self, request: HttpRequest, token: str) -> str | None:
        return None  # never called: the gateway authenticates /v1 requests


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error, in OpenAI's shape. A stream that has started ends with `data: {"error": {...}}` instead."""

    error: ErrorDetail


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_ERRORS: dict[int, Any] = {code: ErrorResponse for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)}
_ANSWER = "OpenAI-compatible; with `stream: true`, `text/event-stream` chunks ending with `data: [DONE]`."

api = NinjaAPI(
    title="Inferia inference API",
    version="1",
    description=(
        "OpenAI-compatible endpoints served by Inferia's gateway. Unknown request fields are passed to the engine "
        "(vLLM) unchanged. Responses carry `x-request-id`; rate-limited keys get `x-ratelimit-*` headers and "
        "`retry-after` on 429."
    ),
    auth=ApiKeyBearer(),
    urls_namespace="inference-openapi",
    docs_url="/docs",
    openapi_url="/openapi.json",
)


def _described_only() -> Any:
    # Never reached: inferia_site.asgi sends these paths to the gateway's consumers before Django sees them.
    raise Http404("served by the gateway's consumers")


@api.post(
    "/chat/completions", response={200: dict[str, Any], **_ERRORS}, summary="Chat completion", description=_ANSWER
)
def chat_completions(request: HttpRequest, body: ChatCompletionRequest) -> Any:
    return _described_only()


@api.post("/completions", response={200: dict[str, Any], **_ERRORS}, summary="Text completion", description=_ANSWER)
def completions(request: HttpRequest, body: CompletionRequest) -> Any:
    return _described_only()


@api.post("/embeddings", response={200: dict[str, Any], **_ERRORS}, summary="Embeddings")
def embeddings(request: HttpRequest, body: EmbeddingRequest) -> Any:
    return _described_only()


@api.get("/models", response={200: ModelList, 401: ErrorResponse, 403: ErrorResponse}, summary="Models the key may use")
def models_list(request: HttpRequest) -> Any:
    return _described_only()


@api.get("/models/{model}", response={200: ModelCard, **_ERRORS}, summary="One model")
def model_retrieve(request: HttpRequest, model: str) -> Any:
    return _described_only()
