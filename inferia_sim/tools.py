"""Simulated tool calls on `/v1/chat/completions`, deterministic so that clients' tool loops can be tested.

A request that offers `tools` is answered with a call to one of them (finish reason `tool_calls`) when:
- `tool_choice` is `"required"` (the first tool is called) or names a function (that one is called), or
- `tool_choice` is `"auto"` or absent, the last message is the user's, and its text names one of the tools (the
  first tool named, in the order of `tools`).
`tool_choice: "none"`, and a conversation whose last message is a tool's result, get the usual text answer.

The arguments fill in the required properties of the tool's JSON schema: the first `enum` value where there is one,
otherwise `"sim"` for strings, 1 for integers and numbers, true for booleans, [] for arrays, and objects filled the
same way (nesting bounded).

A chat request with `response_format` (`json_schema` or `json_object`) is answered, when it calls no tool, with JSON
text built the same way from the schema (`{}` for a bare JSON object), finished as `stop`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from inferia_sim.tokens import message_text

_MAX_DEPTH = 8
_SCALARS: dict[str, Any] = {"string": "sim", "integer": 1, "number": 1, "boolean": True, "array": [], "null": None}


def tool_called(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function the answer calls (`name`, `description`, `parameters`), or None for a text answer."""
    tools = [tool.get("function") for tool in body.get("tools") or () if isinstance(tool, dict)]
    functions = [tool for tool in tools if isinstance(tool, dict) and isinstance(tool.get("name"), str)]
    if not functions:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    if choice == "required":
        return functions[0]
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((tool for tool in functions if tool["name"] == wanted), None)
    messages = body.get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    if last.get("role") != "user":
        return None
    try:
        text = message_text(last)
    except ValueError:
        return None
    return next((tool for tool in functions if tool["name"] in text), None)


def arguments_for(schema: object, depth: int = 0) -> Any:
    """A value that fits `schema`'s type and required properties."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        required = [name for name in schema.get("required") or () if isinstance(name, str)]
        return {name: arguments_for(properties.get(name, {"type": "string"}), depth + 1) for name in required}
    return _SCALARS.get(kind, "sim") if isinstance(kind, str) else "sim"


def tool_call(function: dict[str, Any]) -> dict[str, Any]:
    """The call of `function` as it appears in a chat message's `tool_calls`."""
    return {
        "id": "call_" + os.urandom(12).hex(),
        "type": "function",
        "function": {"name": function["name"], "arguments": json.dumps(arguments_for(function.get("parameters")))},
    }


def structured_text(body: dict[str, Any]) -> str | None:
    """The JSON text that answers a request's `response_format`, or None when it asks for plain text."""
    response_format = body.get("response_format")
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return "{}"
    if kind != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return json.dumps(arguments_for(schema if isinstance(schema, dict) else {"type": "object"}))
