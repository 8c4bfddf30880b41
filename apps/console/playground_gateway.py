"""The playground's plumbing: the per-user playground key, and one chat request run through the real `/v1` pipeline
in this process.

Why a key of the user's own: the request then meets exactly what an application of theirs would (the organisation's
policy, model allow-lists, guardrails, rate limits, budgets, metering and audit), with nothing the console could get
wrong by re-implementing it. The key has the `inference` scope only, belongs to the user (so it dies with their
membership), expires after PLAYGROUND_KEY_TTL, and is stored hashed like any key; its secret lives only in the
server-side session, never in the browser. It is marked with the playground purpose, so the key list says what it is
(and that it expires by itself) instead of showing an unexplained key.

The chat request is handed to the gateway's ASGI app in-process (no network hop, no URL to configure); its
server-sent events are relayed to the browser as they come, followed by one `inferia` event with the request id,
latency and time to first token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.utils import timezone

from apps.keys.models import ApiKey, Scope
from apps.keys.services import api_key_create
from apps.orgs.models import Organization

SESSION_PLAYGROUND_KEYS = "inferia_playground_keys"
PLAYGROUND_KEY_NAME = "Console playground"
PLAYGROUND_KEY_TTL = timedelta(hours=12)
CHAT_PATH = "/v1/chat/completions"
CHAT_SOCKET_PATH = "/v1/chat/socket"  # shown in the playground's WebSocket example


def playground_key_secret(*, session: SessionBase, user: Any, organization: Organization) -> str:
    """The secret of the user's playground key for `organization`, issuing a new key when the session holds none
    that is still usable (first use, expired, revoked, or a new session)."""
    held: dict[str, Any] = dict(session.get(SESSION_PLAYGROUND_KEYS) or {})
    entry = held.get(str(organization.pk))
    if entry:
        key = ApiKey.objects.filter(pk=entry.get("key"), owner=user, organization=organization).first()
        if key is not None and key.is_usable():
            return str(entry["secret"])
    issued = api_key_create(
        organization=organization,
        name=PLAYGROUND_KEY_NAME,
        scopes=[Scope.INFERENCE],
        owner=user,
        actor=user,
        expires_at=timezone.now() + PLAYGROUND_KEY_TTL,
        purpose=ApiKey.Purpose.PLAYGROUND,
    )
    held[str(organization.pk)] = {"key": issued.key.pk, "secret": issued.secret}
    session[SESSION_PLAYGROUND_KEYS] = held
    return issued.secret


def playground_body(
    *, model: str, messages: list[dict[str, str]], max_tokens: int | None, temperature: float | None
) -> bytes:
    """The `/v1/chat/completions` body the playground sends: streamed, with usage in the stream."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return json.dumps(body).encode()


def _gateway_app() -> Any:
    from apps.gateway.asgi import gateway_app

    return gateway_app


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def playground_chat_stream(*, secret: str, body: bytes, app: Any = None) -> AsyncIterator[bytes]:
    """Run one chat request through the gateway in-process and yield the browser's server-sent events: the engine's
    chunks as they arrive (or the gateway's error as an `error` event), then an `inferia` event with the request id,
    HTTP status, latency and time to first token (ms)."""
    app = app or _gateway_app()
    request_id = ""  # the gateway's, from its answer
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT_PATH,
        "raw_path": CHAT_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {secret}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-client-request-id", f"playground-{uuid.uuid4().hex}".encode()),
        ],
        "client": ("127.0.0.1", 0),
        "server": ("console", 0),
    }
    outgoing: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    gone = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        await outgoing.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await outgoing.put(None)

    started = time.perf_counter()
    first_byte: float | None = None
    status = 0
    error_body = b""
    task = asyncio.ensure_future(run())
    try:
        while (message := await outgoing.get()) is not None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                request_id = dict(message["headers"]).get(b"x-request-id", b"").decode()
                continue
            chunk = message.get("body", b"")
            if not chunk:
                continue
            if status != 200:
                error_body += chunk
                continue
            if first_byte is None:
                first_byte = time.perf_counter()
            yield chunk
        if status != 200:
            yield _sse("error", _error_of(error_body, status))
        yield _sse(
            "inferia",
            {
                "request_id": request_id,
                "status": status,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "ttft_ms": round((first_byte - started) * 1000, 1) if first_byte is not None else None,
            },
        )
    finally:
        gone.set()  # the browser left (or we are done): the gateway stops and meters what was delivered
        if not task.done():
            try:
                await asyncio.wait_for(task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()


def _error_of(body: bytes, status: int) -> dict[str, Any]:
    try:
        error = json.loads(body)["error"]
        return {"status": status, "message": error.get("message", ""), "code": error.get("code") or error.get("type")}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {"status": status, "message": "The gateway could not answer.", "code": None}
