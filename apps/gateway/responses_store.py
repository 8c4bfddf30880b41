"""Stored responses of `/v1/responses`, in Redis: what `previous_response_id`, `GET` and `DELETE /v1/responses/{id}`
and `GET /v1/responses/{id}/input_items` read.

A response is stored only when the organisation's policy enables `responses_store` (OpenAI's `store` defaults to
true; Inferia's default is to keep nothing) and the caller did not send `store: false`. It is kept for
INFERIA_RESPONSES_TTL_SECONDS, and only up to INFERIA_RESPONSES_MAX_BYTES (a larger one is answered but not stored,
and says `store: false`). The key holds the organisation's id and a random id of ours: another organisation's id,
like an expired or unknown one, is simply not there (404).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from apps.gateway import errors
from apps.gateway.responses_schemas import ResponsesRequest
from inferia_runtime.random_ids import random_hex

logger = logging.getLogger(__name__)
_ID = re.compile(r"resp_[0-9a-f]{48}")


def response_id_new() -> str:
    """A response's id: random, never derived from anything a client sent."""
    return "resp_" + random_hex(24)


def _key(organization_id: int, response_id: str) -> str:
    return f"inferia:response:{organization_id}:{response_id}"


def response_not_found(response_id: str, *, param: str | None = None) -> errors.GatewayError:
    shown = response_id[:64]
    if param == "previous_response_id":
        return errors.GatewayError(
            404,
            f"Previous response with id '{shown}' not found.",
            type="invalid_request_error",
            param=param,
            code="previous_response_not_found",
        )
    return errors.GatewayError(
        404, f"No response found with id '{shown}'.", type="invalid_request_error", code="not_found"
    )


async def stored_response_put(
    redis: aioredis.Redis,
    *,
    organization_id: int,
    response: dict[str, Any],
    input_items: list[dict[str, Any]],
    conversation: list[dict[str, Any]],
) -> bool:
    """Keep `response`, its input items (as `GET /v1/responses/{id}/input_items` lists them) and the conversation
    that led to it and includes its answer (chat messages, without the instructions, which a following response
    does not inherit); False when it is over the size cap."""
    document = json.dumps(
        {"response": response, "input_items": input_items, "conversation": conversation}, separators=(",", ":")
    ).encode()
    if len(document) > settings.INFERIA_RESPONSES_MAX_BYTES:
        return False
    try:
        await redis.set(_key(organization_id, response["id"]), document, ex=settings.INFERIA_RESPONSES_TTL_SECONDS)
    except (RedisError, OSError):
        # The answer is already the client's: it goes out saying it was not stored, rather than failing.
        logger.warning("a response could not be stored", exc_info=True)
        return False
    return True


async def stored_response_get(
    redis: aioredis.Redis, *, organization_id: int, response_id: str
) -> dict[str, Any] | None:
    """The organisation's stored response (`response` and `conversation`), or None."""
    if _ID.fullmatch(response_id) is None:
        return None
    try:
        raw = await redis.get(_key(organization_id, response_id))
    except (RedisError, OSError):
        raise _unavailable() from None
    if raw is None:
        return None
    document: dict[str, Any] = json.loads(raw)
    return document


async def stored_response_delete(redis: aioredis.Redis, *, organization_id: int, response_id: str) -> bool:
    """Forget the organisation's stored response; False when there was none."""
    if _ID.fullmatch(response_id) is None:
        return False
    try:
        return bool(await redis.delete(_key(organization_id, response_id)))
    except (RedisError, OSError):
        raise _unavailable() from None


def _unavailable() -> errors.GatewayError:
    return errors.GatewayError(
        503, "Stored responses cannot be reached right now.", type="service_unavailable", code="store_unavailable"
    )


def input_items_of(request: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's input as the items OpenAI lists for a response, each with an id (text, as input or as a
    message's content, is one input_text part, or output_text for the assistant's)."""
    if isinstance(request.input, str):
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": request.input}]}
        ]
    else:
        items = [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in request.input]
    for item in items:
        if item["type"] == "message" and isinstance(item["content"], str):
            kind = "output_text" if item["role"] == "assistant" else "input_text"
            item["content"] = [{"type": kind, "text": item["content"]}]
    prefixes = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "file_search_call": "fs"}
    return [{"id": f"{prefixes[item['type']]}_{random_hex(24)}", **item} for item in items]


def input_items_page(items: list[dict[str, Any]], query: bytes) -> dict[str, Any]:
    """One page of a stored response's input items, as OpenAI's list: `order` (`desc` by default), `limit` (1 to
    100, 20 by default) and `after` (an item id) from the query string; a 400 for anything else."""
    try:
        params = parse_qs(query.decode("ascii"), keep_blank_values=True, strict_parsing=bool(query), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        raise errors.invalid_request("The query string is malformed.") from None
    unknown = set(params) - {"order", "limit", "after", "include", "include[]"}
    if unknown or any(len(values) > 1 for name, values in params.items() if not name.startswith("include")):
        raise errors.invalid_request("Known parameters are order, limit and after, once each.")
    order = params.get("order", ["desc"])[0]
    if order not in ("asc", "desc"):
        raise errors.invalid_request("order: must be 'asc' or 'desc'.", param="order")
    limit_text = params.get("limit", ["20"])[0]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 100:
        raise errors.invalid_request("limit: must be between 1 and 100.", param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = params.get("after", [None])[0]
    if after is not None:
        position = next((index for index, item in enumerate(ordered) if item["id"] == after), None)
        if position is None:
            raise errors.invalid_request(f"after: no input item '{after[:64]}' in this response.", param="after")
        ordered = ordered[position + 1 :]
    data = ordered[: int(limit_text)]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ordered) > len(data),
    }


def assistant_message(response: dict[str, Any]) -> dict[str, Any]:
    """A response's output as the assistant's chat message a following response continues from."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            texts += [part.get("text", "") for part in item.get("content") or () if part.get("type") == "output_text"]
        elif item.get("type") == "function_call":
            function = {"name": item["name"], "arguments": item["arguments"]}
            calls.append({"id": item["call_id"], "type": "function", "function": function})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message
