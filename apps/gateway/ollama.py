"""Ollama's API on the gateway, translated at the edge: `/ollama/api/chat` and `/ollama/api/generate` become a chat
completion (or, for a raw generate, a completion) and `/ollama/api/embed` an embedding, each run through the same
pipeline as the `/v1` endpoints (keys, policies, limits, guardrails, routing, failover, usage, metrics); the
pipeline's answer is translated back on its way out (apps.gateway.ollama_out). `/ollama/api/tags` and
`/ollama/api/show` describe the models the key may use, as `/v1/models` does.

- The key comes as `Authorization: Bearer` (what Ollama's clients send with `headers=`).
- Messages keep their roles. An assistant's `tool_calls` (arguments as an object) become OpenAI's, with ids made up
  here; a `tool` message answers the earliest unanswered call of its `tool_name` (or the earliest unanswered one).
- `options`: temperature, top_p, top_k, min_p, seed, stop, presence/frequency penalties carry over; `num_predict`
  becomes `max_tokens` and `repeat_penalty` vLLM's `repetition_penalty`.
- `format`: `"json"` becomes `response_format: json_object`, a JSON schema `response_format: json_schema`.
- `stream` is true unless the request says false; a stream is newline-delimited JSON, ended by Ollama's `done`
  object (done_reason, token counts, durations in nanoseconds).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from apps.gateway import errors
from apps.gateway.ollama_schemas import ChatRequest, EmbedRequest, GenerateRequest, Options
from apps.gateway.schemas import validation_message
from inferia_runtime.json_codec import json_compact

# The Ollama release whose API this speaks; clients read it to decide which features they may use.
OLLAMA_VERSION = "0.12.0"
# What `GET /ollama` answers, as Ollama's server does: clients probe it to find a server.
RUNNING = b"Ollama is running"
_NUM_PREDICT_UNBOUNDED = (-1, -2)
Request = TypeVar("Request", bound=BaseModel)


def request_parse(body: bytes, schema: type[Request]) -> Request:
    """The validated Ollama request; a 400 with the first problem otherwise."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None


def _tool_calls(calls: list[Any], message_index: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_{message_index}_{index}",
            "type": "function",
            "function": {
                "name": call.function.name,
                "arguments": json.dumps(call.function.arguments, ensure_ascii=False),
            },
        }
        for index, call in enumerate(calls)
    ]


def _chat_messages(request: ChatRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, function name) of the calls no tool message has answered yet
    for index, message in enumerate(request.messages):
        if message.images:
            raise errors.invalid_request(
                f"messages.{index}.images: images are not supported here.", param=f"messages.{index}.images"
            )
        if message.role == "tool":
            answered = next((call for call in unanswered if call[1] == message.tool_name), None)
            if answered is None and unanswered:
                answered = unanswered[0]
            if answered is None:
                raise errors.invalid_request(
                    f"messages.{index}: a tool message must answer a tool call of an earlier assistant message.",
                    param=f"messages.{index}",
                )
            unanswered.remove(answered)
            messages.append({"role": "tool", "tool_call_id": answered[0], "content": message.content})
        elif message.role == "assistant" and message.tool_calls:
            calls = _tool_calls(message.tool_calls, index)
            unanswered = [(call["id"], call["function"]["name"]) for call in calls]
            messages.append({"role": "assistant", "content": message.content or None, "tool_calls": calls})
        else:
            messages.append({"role": message.role, "content": message.content})
    return messages


def _options_copy(options: Options | None, document: dict[str, Any]) -> None:
    if options is None:
        return
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(options, name)
        if value is not None:
            document[name] = value
    if options.repeat_penalty is not None:
        document["repetition_penalty"] = options.repeat_penalty  # vLLM's name for it
    if options.stop:
        document["stop"] = [options.stop] if isinstance(options.stop, str) else options.stop
    limit = options.num_predict
    if limit is not None and limit not in _NUM_PREDICT_UNBOUNDED:
        if limit < 1:
            raise errors.invalid_request(
                "options.num_predict: must be a positive number of tokens, -1 (no limit) or -2 (fill the context).",
                param="options.num_predict",
            )
        document["max_tokens"] = limit


def _generation_copy(request: ChatRequest | GenerateRequest, document: dict[str, Any]) -> None:
    _options_copy(request.options, document)
    if request.format == "json":
        document["response_format"] = {"type": "json_object"}
    elif isinstance(request.format, dict):
        # Ollama constrains the answer to the schema: so does `strict`.
        schema = {"name": "format", "schema": request.format, "strict": True}
        document["response_format"] = {"type": "json_schema", "json_schema": schema}
    if request.stream:
        document["stream"] = True
        # The usage chunk is what the final `done` object reports.
        document["stream_options"] = {"include_usage": True}


def chat_document(request: ChatRequest) -> dict[str, Any]:
    """The chat completion that asks what an `/api/chat` request asks."""
    document: dict[str, Any] = {"model": request.model, "messages": _chat_messages(request)}
    if request.tools:
        document["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
    _generation_copy(request, document)
    return document


def _unsupported(request: GenerateRequest) -> None:
    for name in ("suffix", "template", "context", "images"):
        if getattr(request, name):
            raise errors.invalid_request(f"{name}: not supported here.", param=name)


def generate_document(request: GenerateRequest) -> dict[str, Any]:
    """The chat completion (a system message if any, then the prompt as the user's), or with `raw` the completion,
    that asks what an `/api/generate` request asks."""
    _unsupported(request)
    if request.raw:
        document: dict[str, Any] = {"model": request.model, "prompt": request.prompt}
    else:
        messages = [{"role": "system", "content": request.system}] if request.system else []
        document = {"model": request.model, "messages": [*messages, {"role": "user", "content": request.prompt}]}
    _generation_copy(request, document)
    return document


def embed_document(request: EmbedRequest) -> dict[str, Any]:
    """The embedding request that asks what an `/api/embed` request asks."""
    document: dict[str, Any] = {"model": request.model, "input": request.input, "encoding_format": "float"}
    if request.dimensions is not None:
        document["dimensions"] = request.dimensions
    return document


def body_of(document: dict[str, Any]) -> bytes:
    """A translated document as the bytes the pipeline reads."""
    return json_compact(document)


# --- Describing models --------------------------------------------------------------------------------------------


def timestamp(seconds: float) -> str:
    """A time as Ollama writes it (RFC 3339, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _details(card: dict[str, Any]) -> dict[str, Any]:
    # What Ollama reads from a model file (format, family, size, quantisation) is the engine's business: unknown here.
    return {
        "parent_model": str(card.get("parent") or ""),
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def tags_document(cards: list[dict[str, Any]]) -> bytes:
    """`/api/tags` for the model cards of `/v1/models`. The digest names the model (no weights file is behind it
    here), and the size, which Inferia does not know, is 0."""
    models = [
        {
            "name": card["id"],
            "model": card["id"],
            "modified_at": timestamp(int(card["created"])),
            "size": 0,
            "digest": hashlib.sha256(str(card["id"]).encode()).hexdigest(),
            "details": _details(card),
        }
        for card in cards
    ]
    return json.dumps({"models": models}, ensure_ascii=False).encode()


def show_document(card: dict[str, Any]) -> bytes:
    """`/api/show` for one model card: what Inferia knows of it (the model file itself lives with the engine)."""
    document = {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _details(card),
        "model_info": {},
        "capabilities": ["completion", "tools"],
        "modified_at": timestamp(int(card["created"])),
    }
    return json.dumps(document, ensure_ascii=False).encode()


def loaded_document(model: str, *, chat: bool) -> bytes:
    """The answer to a request without messages (or prompt), which asks Ollama to load the model: there is nothing
    to load, the deployment serves it already."""
    document: dict[str, Any] = {"model": model, "created_at": timestamp(datetime.now(UTC).timestamp())}
    if chat:
        document["message"] = {"role": "assistant", "content": ""}
    else:
        document["response"] = ""
    return json.dumps({**document, "done_reason": "load", "done": True}, ensure_ascii=False).encode()


def version_document() -> bytes:
    return json.dumps({"version": OLLAMA_VERSION}).encode()
