"""Anthropic's Messages API on the gateway, translated at the edge: a `/v1/messages` request becomes a chat completion
that runs through the same pipeline as `/v1/chat/completions` (keys, policies, limits, guardrails, routing,
failover, usage, metrics), and the pipeline's answer is translated back on its way out (apps.gateway.messages_out).

- The key may come as `x-api-key` as well as `Authorization: Bearer`; two that name different keys are a 401.
  `anthropic-version` and `anthropic-beta` are accepted and ignored.
- `system` (text or text blocks) becomes a system message; text blocks become text, `tool_use` blocks an
  assistant's `tool_calls`, and `tool_result` blocks `tool` messages, before the user's text of the same turn.
- `max_tokens`, `stop_sequences` (`stop`), `temperature`, `top_p`, `top_k` and `metadata.user_id` (`user`) carry
  over; `tools` become functions, and `tool_choice` auto/any/tool/none becomes auto/required/the named
  function/none (`disable_parallel_tool_use` becomes `parallel_tool_calls: false`).
- `/v1/messages/count_tokens` answers the prompt's token bound the limits reserve (apps.policies.costs), without
  asking the engine.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from apps.gateway import errors
from apps.gateway.messages_schemas import (
    CountTokensRequest,
    Message,
    MessagesRequest,
    TextBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from apps.gateway.schemas import validation_message

API_KEY_HEADER = b"x-api-key"
AUTHORIZATION_HEADER = b"authorization"


def headers_with_api_key(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request's headers with an `x-api-key` turned into the `Authorization: Bearer` the pipeline reads. Two
    keys that differ (or a repeated header) leave an empty authorization, which the pipeline answers with 401."""
    api_keys = [value for name, value in headers if name == API_KEY_HEADER]
    if not api_keys:
        return headers
    bearers = [value for name, value in headers if name == AUTHORIZATION_HEADER]
    kept = [(name, value) for name, value in headers if name not in (API_KEY_HEADER, AUTHORIZATION_HEADER)]
    secret = api_keys[0].strip()
    agreed = len(api_keys) == 1 and len(bearers) <= 1
    if bearers and (bearers[0][:7].lower() != b"bearer " or bearers[0][7:].strip() != secret):
        agreed = False
    kept.append((AUTHORIZATION_HEADER, b"Bearer " + secret if agreed else b""))
    return kept


def request_parse(body: bytes, schema: type[CountTokensRequest]) -> CountTokensRequest:
    """The validated Anthropic request; a 400 with the first problem otherwise."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None


def _text_of(blocks: str | list[TextBlock] | None) -> str:
    if blocks is None:
        return ""
    return blocks if isinstance(blocks, str) else "\n".join(block.text for block in blocks)


def _user_messages(message: Message) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"role": "user", "content": message.content}]
    translated: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            text = _text_of(block.content)
            translated.append(
                {
                    "role": "tool",
                    "tool_call_id": block.tool_use_id,
                    "content": f"Error: {text}" if block.is_error else text,
                }
            )
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        else:
            raise errors.invalid_request("tool_use blocks belong to assistant messages.", param="messages")
    if texts or not translated:
        translated.append({"role": "user", "content": "\n".join(texts)})
    return translated


def _assistant_message(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": "assistant", "content": message.content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        else:
            raise errors.invalid_request("tool_result blocks belong to user messages.", param="messages")
    translated: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts) if texts else None}
    if calls:
        translated["tool_calls"] = calls
    return translated


def chat_document(request: CountTokensRequest) -> dict[str, Any]:
    """The chat completion request that asks what `request` asks."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text_of(request.system)})
    for message in request.messages:
        if message.role == "user":
            messages += _user_messages(message)
        else:
            messages.append(_assistant_message(message))
    document: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        document["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description is not None else {}),
                    "parameters": tool.input_schema,
                },
            }
            for tool in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        if isinstance(choice, ToolChoiceNone):
            document["tool_choice"] = "none"
        elif isinstance(choice, ToolChoiceTool):
            document["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            document["tool_choice"] = "required" if isinstance(choice, ToolChoiceAny) else "auto"
        if getattr(choice, "disable_parallel_tool_use", None):
            document["parallel_tool_calls"] = False
    if isinstance(request, MessagesRequest):
        _sampling_copy(request, document)
    return document


def _sampling_copy(request: MessagesRequest, document: dict[str, Any]) -> None:
    document["max_tokens"] = request.max_tokens
    if request.stop_sequences:
        document["stop"] = request.stop_sequences
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(request, name)
        if value is not None:
            document[name] = value
    if request.metadata is not None and request.metadata.user_id:
        document["user"] = request.metadata.user_id
    output_format = request.output_config.format if request.output_config is not None else None
    if output_format is not None:
        document["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": output_format.json_schema, "strict": True},
        }
    if request.stream:
        document["stream"] = True
        # The usage chunk is what the final `message_delta` reports.
        document["stream_options"] = {"include_usage": True}
