"""Stored responses of `/v1/responses`, in Redis: what `previous_response_id`, `GET` and `DELETE /v1/responses/{id}`
read.

A response is stored only when the organisation's policy enables `responses_store` (OpenAI's `store` defaults to
true; Inferia's default is to keep nothing) and the caller did not send `store: false`. It is kept for
INFERIA_RESPONSES_TTL_SECONDS, and only up to INFERIA_RESPONSES_MAX_BYTES (a larger one is answered but not stored,
and says `store: false`). The key holds the organisation's id and a random id of ours: another organisation's id,
like an expired or unknown one, is simply not there (404).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings

from apps.gateway import errors

_ID = re.compile(r"resp_[0-9a-f]{48}")


def response_id_new() -> str:
    """A response's id: random, never derived from anything a client sent."""
    return "resp_" + secrets.token_hex(24)


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
    redis: aioredis.Redis, *, organization_id: int, response: dict[str, Any], conversation: list[dict[str, Any]]
) -> bool:
    """Keep `response` and the conversation that led to it and includes its answer (chat messages, without the
    instructions, which a following response does not inherit); False when it is over the size cap."""
    document = json.dumps({"response": response, "conversation": conversation}, separators=(",", ":")).encode()
    if len(document) > settings.INFERIA_RESPONSES_MAX_BYTES:
        return False
    await redis.set(_key(organization_id, response["id"]), document, ex=settings.INFERIA_RESPONSES_TTL_SECONDS)
    return True


async def stored_response_get(
    redis: aioredis.Redis, *, organization_id: int, response_id: str
) -> dict[str, Any] | None:
    """The organisation's stored response (`response` and `conversation`), or None."""
    if _ID.fullmatch(response_id) is None:
        return None
    raw = await redis.get(_key(organization_id, response_id))
    if raw is None:
        return None
    document: dict[str, Any] = json.loads(raw)
    return document


async def stored_response_delete(redis: aioredis.Redis, *, organization_id: int, response_id: str) -> bool:
    """Forget the organisation's stored response; False when there was none."""
    if _ID.fullmatch(response_id) is None:
        return False
    return bool(await redis.delete(_key(organization_id, response_id)))


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
