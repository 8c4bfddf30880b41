"""OpenAI's Responses API on the gateway, translated at the edge: a `/v1/responses` request becomes a chat completion
that runs through the same pipeline as `/v1/chat/completions` (keys, policies, limits, guardrails, templates,
routing, failover, usage under the endpoint `responses`, metrics), and the pipeline's answer is translated back on
its way out (apps.gateway.responses_out). Stored responses are apps.gateway.responses_store's.

- `instructions` becomes the first (system) message; `input` is the user's text, or items: messages (text and image
  parts; `developer` is a system message), `function_call` items an assistant's `tool_calls` (joined to the
  assistant message just before them) and `function_call_output` items `tool` messages. A `file_search_call` item
  passed back in is dropped: its chunks were that turn's context.
- `max_output_tokens` (`max_tokens`), `temperature`, `top_p`, `user`, `parallel_tool_calls` and Inferia's own
  `template` and `template_variables` carry over; function
  `tools` become functions and `tool_choice` none/auto/required/a function carries over; `text.format` json_schema or
  json_object becomes `response_format`.
- A `file_search` tool becomes the gateway's `retrieval` (apps.gateway.retrieval): the named stores the key may use
  are searched for the last user message on every request that offers the tool (the model is not asked whether to
  search), and the answer reports it as a `file_search_call` item.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from apps.gateway import errors
from apps.gateway.responses_schemas import (
    FileSearchCallItem,
    FileSearchTool,
    FormatJsonObject,
    FormatJsonSchema,
    FunctionCallItem,
    FunctionCallOutputItem,
    FunctionTool,
    InputImage,
    InputText,
    MessageItem,
    OutputText,
    ResponsesRequest,
    ToolChoiceFunction,
)
from apps.gateway.schemas import validation_message


def request_parse(body: bytes) -> ResponsesRequest:
    """The validated Responses request; a 400 with the first problem otherwise."""
    try:
        return ResponsesRequest.model_validate_json(body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None


def _message(item: MessageItem) -> dict[str, Any]:
    role = "system" if item.role == "developer" else item.role
    if isinstance(item.content, str):
        return {"role": role, "content": item.content}
    texts: list[str] = []
    parts: list[dict[str, Any]] = []
    for part in item.content:
        if isinstance(part, InputImage):
            if role != "user":
                raise errors.invalid_request("input_image parts belong to user messages.", param="input")
            image: dict[str, Any] = {"url": part.image_url}
            if part.detail is not None:
                image["detail"] = part.detail
            parts.append({"type": "image_url", "image_url": image})
        else:
            text = part.refusal if not isinstance(part, InputText | OutputText) else part.text
            texts.append(text)
            parts.append({"type": "text", "text": text})
    if len(parts) == len(texts):
        return {"role": role, "content": "\n".join(texts)}
    return {"role": role, "content": parts}


def _function_call(item: FunctionCallItem) -> dict[str, Any]:
    return {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}


def input_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The chat messages of the request's `input` (not its instructions): what a stored response keeps of it."""
    if isinstance(request.input, str):
        return [{"role": "user", "content": request.input}]
    messages: list[dict[str, Any]] = []
    for item in request.input:
        if isinstance(item, MessageItem):
            messages.append(_message(item))
        elif isinstance(item, FunctionCallItem):
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(_function_call(item))
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [_function_call(item)]})
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else "\n".join(part.text for part in item.output)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        else:
            assert isinstance(item, FileSearchCallItem)
    if not messages:
        raise errors.invalid_request("input: needs at least one message or function call output.", param="input")
    return messages


def chat_document(
    request: ResponsesRequest, *, earlier: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat completion request that asks what `request` asks, after the `earlier` conversation (a previous
    response's, without its instructions); and the conversation's messages without the instructions."""
    conversation = [*(earlier or ()), *input_messages(request)]
    messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
    document: dict[str, Any] = {"model": request.model, "messages": messages + conversation}
    functions = [tool for tool in request.tools or () if isinstance(tool, FunctionTool)]
    searches = [tool for tool in request.tools or () if isinstance(tool, FileSearchTool)]
    if functions:
        document["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    **({"description": tool.description} if tool.description is not None else {}),
                    "parameters": tool.parameters if tool.parameters is not None else {"type": "object"},
                },
            }
            for tool in functions
        ]
    if len(searches) > 1:
        raise errors.invalid_request("tools: at most one file_search tool.", param="tools")
    if searches:
        search = searches[0]
        document["retrieval"] = {
            "vector_store_ids": search.vector_store_ids,
            **({"max_num_results": search.max_num_results} if search.max_num_results is not None else {}),
            **({"filters": search.filters} if search.filters is not None else {}),
        }
    choice = request.tool_choice
    if isinstance(choice, ToolChoiceFunction):
        if choice.name not in {tool.name for tool in functions}:
            raise errors.invalid_request(f"tool_choice: no function tool named '{choice.name}'.", param="tool_choice")
        document["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, str) and functions:
        document["tool_choice"] = choice
    if request.parallel_tool_calls is not None and functions:
        document["parallel_tool_calls"] = request.parallel_tool_calls
    text_format = request.text.format if request.text is not None else None
    if isinstance(text_format, FormatJsonSchema):
        schema: dict[str, Any] = {"name": text_format.name, "schema": text_format.schema_}
        if text_format.description is not None:
            schema["description"] = text_format.description
        if text_format.strict is not None:
            schema["strict"] = text_format.strict
        document["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(text_format, FormatJsonObject):
        document["response_format"] = {"type": "json_object"}
    if request.max_output_tokens is not None:
        document["max_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p", "user", "template", "template_variables"):
        value = getattr(request, name)
        if value is not None:
            document[name] = value
    if request.stream:
        document["stream"] = True
        document["stream_options"] = {"include_usage": True}  # the usage `response.completed` reports
    return document, conversation


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text retrieval searches for (its own rule: the last user message's text), for the file_search_call."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(part["text"] for part in content or () if part.get("type") == "text")
    return ""


def response_echo(request: ResponsesRequest, *, stored: bool) -> dict[str, Any]:
    """The request's fields a Response repeats, with OpenAI's defaults where the request gives none."""
    choice = request.tool_choice
    return {
        "model": request.model,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "tools": [_dumped(tool) for tool in request.tools or ()],
        "tool_choice": "auto" if choice is None else choice if isinstance(choice, str) else _dumped(choice),
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "text": (_dumped(request.text) if request.text is not None else None) or {"format": {"type": "text"}},
        "previous_response_id": request.previous_response_id,
        "store": stored,
        "metadata": request.metadata or {},
        "user": request.user,
        "truncation": "disabled",
    }


def _dumped(model: BaseModel) -> dict[str, Any]:
    """A part of the request as the client's JSON gave it."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)
