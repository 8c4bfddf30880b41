"""Counting a request's prompt tokens on the engine that would serve it (`POST /tokenize`, served by vLLM and
inferia-sim), for the one admission where the cheap upper bound of the prompt is what a token or money limit refuses.

Never on the common path: the gateway asks only after a limit refused a request that the exact count might fit. An
engine that cannot answer is remembered per deployment and not asked again for a while; whatever goes wrong means
"no exact count", and the request keeps its upper bound.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from apps.gateway.catalog import DeploymentRoute
from apps.gateway.runtime import GatewayRuntime

# Short: the caller is waiting for its 429 or its answer, and the upper bound is always there to fall back on.
TOKENIZE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)
# How long a deployment whose engine did not count is left alone. An external endpoint is asked once in a long
# while (most OpenAI-compatible servers have no /tokenize); Inferia's own engines have it, so a failure there is
# taken as passing (an overloaded or restarting replica).
_UNKNOWN_RETRY_S = 3600.0
_KNOWN_RETRY_S = 60.0
# Fields of a chat request that shape its prompt besides the messages, read by vLLM's /tokenize as by its chat
# endpoint.
_CHAT_TEMPLATE_FIELDS = (
    "add_generation_prompt",
    "continue_final_message",
    "chat_template",
    "chat_template_kwargs",
    "add_special_tokens",
)

# Deployment id -> monotonic time before which its engine is not asked (per process: a cheap, local memory).
_not_before: dict[int, float] = {}


def tokenize_body(document: dict[str, Any], model: str) -> dict[str, Any] | None:
    """The `/tokenize` request counting exactly the prompt tokens `document` will use, or None where /tokenize
    would count fewer than the engine's chat endpoint: tool definitions and image or audio parts (not every vLLM
    version takes them on /tokenize), prompts given as several strings or token ids (already bounded exactly)."""
    messages = document.get("messages")
    if isinstance(messages, list):
        if document.get("tools") or document.get("functions"):
            return None
        for message in messages:
            if not isinstance(message, dict):
                return None
            content = message.get("content")
            if isinstance(content, list) and not all(
                isinstance(part, dict) and part.get("type") == "text" for part in content
            ):
                return None
        body = {"model": model, "messages": messages}
        for name in _CHAT_TEMPLATE_FIELDS:
            if name in document:
                body[name] = document[name]
        return body
    prompt = document.get("prompt")
    if isinstance(prompt, str):
        body = {"model": model, "prompt": prompt}
        if "add_special_tokens" in document:
            body["add_special_tokens"] = document["add_special_tokens"]
        return body
    return None


async def prompt_tokens_count(rt: GatewayRuntime, route: DeploymentRoute, document: dict[str, Any]) -> int | None:
    """The prompt tokens of `document` as the deployment's engine counts them, from a replica the router picks;
    None when it cannot tell (no /tokenize, a failure, a timeout, a request /tokenize cannot count exactly)."""
    now = time.monotonic()
    if _not_before.get(route.id, 0.0) > now:
        return None
    body = tokenize_body(document, route.upstream_model or route.served_model_name)
    if body is None:
        return None
    replica = rt.router.choose(route)
    if replica is None:
        return None
    http = rt.guarded_http() if route.external else rt.http
    count: int | None = None
    try:
        async with http.post(
            replica.urls["tokenize"],
            data=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers=route.upstream_headers,
            timeout=TOKENIZE_TIMEOUT,
        ) as response:
            if response.status == 200:
                count = _count(await response.read())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        count = None
    if count is None:
        _not_before[route.id] = now + (_KNOWN_RETRY_S if route.tokenize else _UNKNOWN_RETRY_S)
        return None
    rt.router.succeeded(replica)
    return count


def _count(payload: bytes) -> int | None:
    document = json.loads(payload)
    count = document.get("count") if isinstance(document, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None
