"""Request bodies of the `/v1` endpoints, validated inside the consumer.

Only what the gateway relies on is declared; every other field (vendor extensions such as `top_k` or `guided_json`)
is allowed through untouched, because the original bytes are what goes upstream. django-ninja publishes these
models at `/v1/openapi.json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

# Strings that end up in records, logs or metrics carry no control characters (PostgreSQL refuses NUL in text, and
# a newline forges log lines): refused here, before anything is recorded.
_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
ModelName = Annotated[StrictStr, Field(min_length=1, max_length=200, pattern=_NO_CONTROL)]
UserName = Annotated[StrictStr, Field(max_length=256, pattern=_NO_CONTROL)]
# OpenAI's shape: at most 16 pairs, keys up to 64 characters, values up to 512.
Metadata = Annotated[
    dict[
        Annotated[StrictStr, Field(max_length=64, pattern=_NO_CONTROL)],
        Annotated[StrictStr, Field(max_length=512, pattern=_NO_CONTROL)],
    ],
    Field(max_length=16),
]
# Strict: OpenAI refuses "16" and true for an integer, and so do we (a bool is not a count of tokens).
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _Passthrough(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class StreamOptions(_Passthrough):
    include_usage: StrictBool | None = None


class ChatMessage(_Passthrough):
    """One message of a conversation; `content` may be text, a list of parts, or empty for tool calls."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_Passthrough):
    """`POST /v1/chat/completions`."""

    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    user: UserName | None = None
    metadata: Metadata | None = None
    # Rendered and removed by the gateway before validation (apps/gateway/templating.py); declared for the docs.
    template: StrictStr | None = Field(
        default=None,
        description="A prompt template of the caller's organisation: `name`, `name@latest` or `name@3`. Its messages "
        "come before the request's own; its model and parameters apply where the request gives none.",
    )
    template_variables: dict[str, str] | None = None


PromptTokens = list[int]


class CompletionRequest(_Passthrough):
    """`POST /v1/completions`."""

    model: ModelName
    prompt: StrictStr | Annotated[list[StrictStr], Field(min_length=1)] | PromptTokens | list[PromptTokens]
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: PositiveInt | None = None
    n: PositiveInt | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    user: UserName | None = None
    metadata: Metadata | None = None


class EmbeddingRequest(_Passthrough):
    """`POST /v1/embeddings`."""

    model: ModelName
    input: (
        Annotated[StrictStr, Field(min_length=1)]
        | Annotated[list[StrictStr], Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[PromptTokens], Field(min_length=1)]
    )
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: PositiveInt | None = None
    user: UserName | None = None


InferenceRequest = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


def validation_message(error: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the offending parameter (dotted path) for the first problem pydantic found."""
    first = error.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", None
    kind = first.get("type")
    if kind == "model_type" and not location:
        return "The request body must be a JSON object.", None
    if kind == "model_type":
        return f"{location}: must be a JSON object.", location
    if kind == "string_pattern_mismatch" and first.get("ctx", {}).get("pattern") == _NO_CONTROL:
        return f"{location}: must not contain control characters (such as NUL or a line break).", location
    message = first.get("msg", "Invalid request.")
    return (f"{location}: {message}" if location else message), location or None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An inference endpoint: its name in usage records, its request schema, whether it can stream, whether it is a
    chat (templates, retrieval and chat-shaped output guardrails apply) and the engine endpoint that serves it."""

    name: str
    schema: type[BaseModel]
    streams: bool
    chat: bool = False
    upstream: str = ""

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name


CHAT_COMPLETIONS = Endpoint("chat.completions", ChatCompletionRequest, streams=True, chat=True)
# Anthropic's Messages API, translated into a chat completion at the edge (apps.gateway.messages).
MESSAGES = Endpoint("messages", ChatCompletionRequest, streams=True, chat=True, upstream="chat.completions")
# Chat completions over `/v1/chat/socket` (apps.gateway.chat_socket): the same request, recorded under its own name.
CHAT_SOCKET = Endpoint("chat.socket", ChatCompletionRequest, streams=True, chat=True, upstream="chat.completions")
# OpenAI's Responses API, translated into a chat completion at the edge (apps.gateway.responses).
RESPONSES = Endpoint("responses", ChatCompletionRequest, streams=True, chat=True, upstream="chat.completions")
COMPLETIONS = Endpoint("completions", CompletionRequest, streams=True)
EMBEDDINGS = Endpoint("embeddings", EmbeddingRequest, streams=False)
# Ollama's API, translated at the edge (apps.gateway.ollama): a generate is a chat turn, or a completion when raw.
OLLAMA_CHAT = Endpoint("ollama.chat", ChatCompletionRequest, streams=True, chat=True, upstream="chat.completions")
OLLAMA_GENERATE = Endpoint(
    "ollama.generate", ChatCompletionRequest, streams=True, chat=True, upstream="chat.completions"
)
OLLAMA_GENERATE_RAW = Endpoint("ollama.generate", CompletionRequest, streams=True, upstream="completions")
OLLAMA_EMBED = Endpoint("ollama.embed", EmbeddingRequest, streams=False, upstream="embeddings")
