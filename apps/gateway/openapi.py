"""`/v1/openapi.json` and `/v1/docs`: the inference API described by django-ninja from the very pydantic models the
gateway's consumers validate requests with (apps.gateway.schemas), so the published schema cannot drift from what
is enforced.

The inference operations below exist to be described, never to run: inferia_site/asgi.py sends those paths to the
gateway's consumers. The files and vector-store endpoints (apps.knowledge.openai_api) are ordinary Django views,
added here so that one schema describes `/v1`, and every error they raise is answered in OpenAI's shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.security import APIKeyHeader, HttpBearer
from pydantic import BaseModel, Field

from apps.gateway.messages_schemas import CountTokensRequest, MessagesRequest
from apps.gateway.responses_schemas import ResponsesRequest
from apps.gateway.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from apps.knowledge.openai_api import ERRORS, ErrorResponse, OpenAIError
from apps.knowledge.openai_api import router as knowledge_router


class ApiKeyBearer(HttpBearer):
    """`Authorization: Bearer sk-inf-...`: an Inferia API key with the `inference` scope."""

    def authenticate(self, request: HttpRequest, token: str) -> str | None:
        return None  # never called: the gateway authenticates /v1 requests


class AnthropicApiKey(APIKeyHeader):
    """`x-api-key: sk-inf-...`, as Anthropic's clients send it (on `/v1/messages` only)."""

    param_name = "x-api-key"

    def authenticate(self, request: HttpRequest, key: str | None) -> str | None:
        return None  # never called: the gateway authenticates /v1 requests


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """An error of Anthropic's Messages API."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


class TokenCount(BaseModel):
    input_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


_ERRORS: dict[int, Any] = ERRORS
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


_ANTHROPIC_ERRORS: dict[int, Any] = {
    code: AnthropicError for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
}
_ANTHROPIC_AUTH = [ApiKeyBearer(), AnthropicApiKey()]
_MESSAGE = (
    "Anthropic's Messages API, served as a chat completion of the same model (same keys, policies and limits). "
    "With `stream: true`, Anthropic's `text/event-stream` events. Errors in Anthropic's shape."
)


@api.post(
    "/messages",
    response={200: dict[str, Any], **_ANTHROPIC_ERRORS},
    auth=_ANTHROPIC_AUTH,
    summary="Message (Anthropic)",
    description=_MESSAGE,
)
def messages(request: HttpRequest, body: MessagesRequest) -> Any:
    return _described_only()


@api.post(
    "/messages/count_tokens",
    response={200: TokenCount, **_ANTHROPIC_ERRORS},
    auth=_ANTHROPIC_AUTH,
    summary="Count a message's input tokens (Anthropic)",
    description="The bound on the prompt's tokens that rate limits and budgets count; the engine is not asked.",
)
def messages_count_tokens(request: HttpRequest, body: CountTokensRequest) -> Any:
    return _described_only()


_RESPONSE = (
    "OpenAI's Responses API, served as a chat completion of the same model (same keys, policies, limits and usage "
    "records, under the endpoint `responses`). With `stream: true`, the Responses `text/event-stream` events. A "
    "`file_search` tool searches the named vector stores the key may use. Responses are stored (for "
    "`previous_response_id` and `GET /v1/responses/{id}`) only where the organisation's policy enables "
    "`responses_store`; otherwise `store: true` is accepted and nothing is kept."
)


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool


@api.post("/responses", response={200: dict[str, Any], **_ERRORS}, summary="Response", description=_RESPONSE)
def responses_create(request: HttpRequest, body: ResponsesRequest) -> Any:
    return _described_only()


@api.get("/responses/{response_id}", response={200: dict[str, Any], **_ERRORS}, summary="A stored response")
def response_retrieve(request: HttpRequest, response_id: str) -> Any:
    return _described_only()


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool


@api.get(
    "/responses/{response_id}/input_items",
    response={200: InputItemList, **_ERRORS},
    summary="A stored response's input items",
)
def response_input_items(
    request: HttpRequest,
    response_id: str,
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Field(ge=1, le=100)] = 20,
    after: str | None = None,
) -> Any:
    return _described_only()


@api.delete("/responses/{response_id}", response={200: DeletedResponse, **_ERRORS}, summary="Delete a stored response")
def response_delete(request: HttpRequest, response_id: str) -> Any:
    return _described_only()


api.add_router("", knowledge_router)


def _error(request: HttpRequest, error: Any) -> HttpResponse:
    return api.create_response(request, error.payload(), status=error.status)


def _invalid(request: HttpRequest, error: Any) -> HttpResponse:
    first = error.errors[0] if error.errors else {}
    where = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "form", "file")]
    message = f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid')}"
    return _error(request, OpenAIError(400, message, param=".".join(where) or None))


def _unauthenticated(request: HttpRequest, error: Any) -> HttpResponse:
    message = "Incorrect API key provided. Pass a valid key as 'Authorization: Bearer sk-inf-...'."
    return _error(request, OpenAIError(401, message, code="invalid_api_key"))


def _http(request: HttpRequest, error: Any) -> HttpResponse:
    return _error(request, OpenAIError(error.status_code, str(error.message)))


def _not_found(request: HttpRequest, error: Any) -> HttpResponse:
    return _error(request, OpenAIError(404, f"Unknown endpoint: {request.path}", code="unknown_url"))


api.add_exception_handler(OpenAIError, _error)
api.add_exception_handler(NinjaValidationError, _invalid)
api.add_exception_handler(AuthenticationError, _unauthenticated)
api.add_exception_handler(HttpError, _http)
api.add_exception_handler(Http404, _not_found)
