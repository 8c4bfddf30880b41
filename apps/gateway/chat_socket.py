"""`/v1/chat/socket`: chat completions over one WebSocket, several in flight at once, each through the same pipeline as
`POST /v1/chat/completions` (keys, policies, limits, guardrails, templates, routing, failover, usage), recorded
under the endpoint `chat.socket` and timed under the route `chat.socket`.

The connection authenticates once: with `Authorization: Bearer <key>` on the upgrade (servers), or with a socket
token (apps.keys.socket_tokens) sent as the first message, `{"type": "auth", "token": "wst-..."}` (browsers, which
cannot set headers; a first message keeps the token out of URLs and so out of access logs). An `Origin` header,
whenever sent, must be one of `INFERIA_SOCKET_ALLOWED_ORIGINS`, or the upgrade is refused (HTTP 403). Each request
still checks its key through the key cache, so a revocation ends the connection at its next request.

Client to server (text frames of JSON):
- `{"type": "request", "id": "r1", "body": {...chat completion...}}`: `id` is the client's (1 to 128 printable ASCII
  characters, unique among its requests in flight, else that request is refused with the code
  `duplicate_request_id`; also recorded as the usage record's client request id). The answer always streams, with
  usage.
- `{"type": "cancel", "id": "r1"}`: stop that request (the engine's request is dropped; its usage is recorded as
  cancelled, as when an HTTP client leaves). An id no longer in flight is ignored.

Server to client: `{"type": "ready"}` once authenticated; per request, `{"id", "type": "chunk", "chunk": {...}}` (the
chat.completion.chunk objects of the SSE stream), then exactly one of `{"id", "type": "done", "usage": {...}}`,
`{"id", "type": "error", "status": 429, "error": {...OpenAI's error...}}` (with `retry_after`, in seconds, where
the HTTP answer has `retry-after`) or `{"id", "type": "cancelled"}`. A frame
that names no usable id is answered with `"id": null`. A 401 (a bad key or token, or a key revoked since) is sent
and the connection closed with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from django.conf import settings

from apps.gateway import errors, metrics, pipeline
from apps.gateway.errors import GatewayError
from apps.gateway.event_relay import USAGE_MARKERS
from apps.gateway.exchange import CLIENT_REQUEST_ID_HEADER, Exchange, client_request_id_valid
from apps.gateway.runtime import runtime
from apps.gateway.schemas import CHAT_SOCKET
from apps.keys.socket_tokens import socket_token_redeem

PATH = "/v1/chat/socket"
ROUTE = "chat.socket"  # the latency metric's label
CLOSE_UNAUTHENTICATED = 4401
CLOSE_POLICY = 1008  # before the accept: the upgrade is answered 403
CLOSE_TRY_AGAIN = 1013

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _frame_error(request_id: str | None, error: GatewayError) -> str:
    document = json.loads(error.body())
    return json.dumps({"id": request_id, "type": "error", "status": error.status, **document})


def _origin_allowed(headers: list[tuple[bytes, bytes]]) -> bool:
    origins = [value for name, value in headers if name == b"origin"]
    if not origins:
        return True  # not a browser: its key is its credential
    return len(origins) == 1 and origins[0].decode("latin-1") in settings.INFERIA_SOCKET_ALLOWED_ORIGINS


async def chat_socket(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """The ASGI application for one connection to `/v1/chat/socket`."""
    if (await receive())["type"] != "websocket.connect":
        return
    if not _origin_allowed(scope["headers"]):
        await send({"type": "websocket.close", "code": CLOSE_POLICY})
        return
    await send({"type": "websocket.accept"})
    await ChatSocket(scope, send).serve(receive)


class ChatSocket:
    """One accepted connection: its credentials, its requests in flight, and the one writer of its frames."""

    def __init__(self, scope: dict[str, Any], send: Send) -> None:
        self._send = send
        self._writing = asyncio.Lock()  # frames of interleaved requests never mix on the wire
        self.open = True
        authorizations = [value for name, value in scope["headers"] if name == b"authorization"]
        # None: a browser, which presents a token. Two keys are ambiguous: an empty value, which is a 401.
        self.authorization: bytes | None = None
        if authorizations:
            self.authorization = authorizations[0] if len(authorizations) == 1 else b""
        self.key_hash: str | None = None
        self.in_flight: dict[str, tuple[asyncio.Task[None], Exchange]] = {}

    async def frame(self, text: str) -> None:
        if not self.open:
            return
        async with self._writing:
            try:
                await self._send({"type": "websocket.send", "text": text})
            except (OSError, RuntimeError):
                self.open = False  # the client is gone: its disconnect, arriving next, cancels what is in flight

    async def close(self, code: int) -> None:
        if self.open:
            self.open = False
            async with self._writing:
                with contextlib.suppress(OSError, RuntimeError):  # already closed by the client
                    await self._send({"type": "websocket.close", "code": code})

    async def serve(self, receive: Receive) -> None:
        try:
            if await self._authenticate(receive):
                await self.frame('{"type":"ready"}')
                await self._read(receive)
        finally:
            await self._abandon()

    # --- Authentication -------------------------------------------------------------------------------------------

    async def _authenticate(self, receive: Receive) -> bool:
        rt = runtime()
        organization_id: int | None = None
        if self.authorization is None:
            token = await self._token(receive)
            if token is None:
                return False
            try:
                grant = await socket_token_redeem(rt.redis, token)
            except redis.RedisError:
                await self.frame(_frame_error(None, errors.policy_unavailable()))
                await self.close(CLOSE_TRY_AGAIN)
                return False
            if grant is not None:
                self.key_hash, organization_id = grant.key_hash, grant.organization_id
            else:
                self.authorization = b""  # an unknown, expired or spent token: the pipeline's 401
        probe = self._exchange(None)
        try:
            principal = await pipeline.authenticate(rt, probe)
            if organization_id is not None and principal.organization_id != organization_id:
                raise errors.invalid_api_key()  # the key moved: the token was for another organisation
        except GatewayError as error:
            await self.frame(_frame_error(None, error))
            await self.close(CLOSE_UNAUTHENTICATED if error.status == 401 else CLOSE_POLICY)
            return False
        return True

    async def _token(self, receive: Receive) -> str | None:
        """The token of the first message, `{"type": "auth", "token": "..."}`; None once the connection is over."""
        try:
            async with asyncio.timeout(settings.INFERIA_SOCKET_AUTH_TIMEOUT_SECONDS):
                message = await receive()
        except TimeoutError:
            message = {"type": "websocket.receive"}
        if message["type"] != "websocket.receive":
            self.open = False
            return None
        try:
            document = json.loads(message.get("text") or "")
        except ValueError:
            document = None
        if isinstance(document, dict) and document.get("type") == "auth" and isinstance(document.get("token"), str):
            return str(document["token"])
        return ""  # no token: answered as an unknown one

    def _exchange(self, request_id: str | None) -> Exchange:
        headers = [] if self.authorization is None else [(b"authorization", self.authorization)]
        if request_id is not None:
            headers.append((CLIENT_REQUEST_ID_HEADER, request_id.encode()))
        exchange = Exchange({"method": "POST", "path": PATH, "headers": headers}, self._send)
        exchange.key_hash = self.key_hash
        return exchange

    # --- Requests -------------------------------------------------------------------------------------------------

    async def _read(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                self.open = False
                return
            text = message.get("text")
            if text is None:
                await self.frame(_frame_error(None, errors.invalid_request("Send JSON in text frames.")))
                continue
            if len(text) > settings.INFERIA_MAX_BODY_BYTES:
                await self.frame(_frame_error(None, errors.body_too_large(settings.INFERIA_MAX_BODY_BYTES)))
                continue
            await self._message(text)
            if not self.open:
                return

    async def _message(self, text: str) -> None:
        try:
            document = json.loads(text)
        except ValueError:
            await self.frame(_frame_error(None, errors.invalid_request("The message is not valid JSON.")))
            return
        if not isinstance(document, dict):
            await self.frame(_frame_error(None, errors.invalid_request("The message must be a JSON object.")))
            return
        request_id = document.get("id")
        if not isinstance(request_id, str) or not client_request_id_valid(request_id.encode()):
            message = "id: 1 to 128 printable ASCII characters, without spaces."
            await self.frame(_frame_error(None, errors.invalid_request(message, param="id")))
            return
        kind = document.get("type")
        if kind == "cancel":
            self._cancel(request_id)
        elif kind == "request":
            await self._start(request_id, document.get("body"))
        else:
            message = "type: 'request' or 'cancel'."
            await self.frame(_frame_error(request_id, errors.invalid_request(message, param="type")))

    async def _start(self, request_id: str, body: Any) -> None:
        if request_id in self.in_flight:
            # Refused under the same id: its code tells this answer from the one of the request in flight.
            message = "A request with this id is already in flight on this connection."
            duplicate = errors.invalid_request(message, param="id", code="duplicate_request_id")
            await self.frame(_frame_error(request_id, duplicate))
            return
        if len(self.in_flight) >= settings.INFERIA_SOCKET_MAX_IN_FLIGHT:
            limit = settings.INFERIA_SOCKET_MAX_IN_FLIGHT
            refusal = GatewayError(
                429,
                f"At most {limit} requests may be in flight on one connection.",
                type="rate_limit_error",
                code="too_many_requests_in_flight",
            )
            await self.frame(_frame_error(request_id, refusal))
            return
        if isinstance(body, dict):
            # A socket always streams, with usage: the final `done` frame reports it.
            options = body.get("stream_options")
            body = {**body, "stream": True, "stream_options": {**(options if isinstance(options, dict) else {})}}
            body["stream_options"]["include_usage"] = True
        exchange = self._exchange(request_id)
        exchange.send = RequestFrames(self, request_id, exchange)
        exchange.body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        task = asyncio.create_task(self._run(request_id, exchange))
        self.in_flight[request_id] = (task, exchange)

    async def _run(self, request_id: str, exchange: Exchange) -> None:
        try:
            await pipeline.inference_handle(exchange, CHAT_SOCKET)
        except asyncio.CancelledError:
            if not exchange.client_gone:
                raise  # cancelled before the pipeline could record it (while authenticating): nothing to meter
        finally:
            self.in_flight.pop(request_id, None)
            metrics.request_finished(
                route=ROUTE,
                model=exchange.model,
                status=exchange.status or 499,
                seconds=time.perf_counter() - exchange.started,
            )
        if exchange.client_gone:
            await self.frame(json.dumps({"id": request_id, "type": "cancelled"}))
        elif exchange.status == 401:
            await self.close(CLOSE_UNAUTHENTICATED)  # the key was revoked or expired since the connection opened

    def _cancel(self, request_id: str) -> None:
        entry = self.in_flight.get(request_id)
        if entry is None:
            return  # finished already, or never was: the client's cancel crossed its end
        task, exchange = entry
        if not exchange.finishing:
            exchange.client_gone = True
            task.cancel()

    async def _abandon(self) -> None:
        """The connection is over: stop what is in flight, as for HTTP clients that leave, and let it be metered."""
        self.open = False
        tasks = []
        for task, exchange in list(self.in_flight.values()):
            if not exchange.finishing:
                exchange.client_gone = True
                task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class RequestFrames:
    """The `send` of one request's exchange: the pipeline's HTTP answer (an SSE stream, or a JSON error) as that
    request's frames on the socket."""

    __slots__ = (
        "body",
        "ended",
        "exchange",
        "id_prefix",
        "request_id",
        "retry_after",
        "socket",
        "status",
        "streaming",
        "usage",
    )

    def __init__(self, socket: ChatSocket, request_id: str, exchange: Exchange) -> None:
        self.socket = socket
        self.request_id = request_id
        self.exchange = exchange
        self.id_prefix = '{"id":' + json.dumps(request_id)
        self.status = 0
        self.retry_after: int | None = None  # a 429's `retry-after`, in seconds
        self.streaming = False
        self.ended = False  # an error frame ended the request: no `done` follows
        self.body = b""
        self.usage: Any = None

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message["headers"]:
                if name == b"content-type":
                    self.streaming = value.startswith(b"text/event-stream")
                elif name == b"retry-after" and value.isdigit():
                    self.retry_after = int(value)
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self.streaming:
            if body:
                await self._events(body)
            if not more and not self.ended:
                usage = json.dumps(self.usage)
                await self.socket.frame(f'{self.id_prefix},"type":"done","usage":{usage}}}')
            return
        self.body += body
        if not more:
            await self._answer(self.body)

    async def _events(self, data: bytes) -> None:
        for event in data.split(b"\n\n"):
            if not event.startswith(b"data: "):
                continue
            payload = event[6:]
            if payload == b"[DONE]":
                continue
            if payload.startswith(b'{"error"'):
                self.ended = True
                status = self.exchange.status or 500
                await self.socket.frame(
                    f'{self.id_prefix},"type":"error","status":{status},{payload[1:].decode(errors="replace")}'
                )
                continue
            if USAGE_MARKERS[0] in payload or USAGE_MARKERS[1] in payload:
                document = json.loads(payload)
                if isinstance(document.get("usage"), dict):
                    self.usage = document["usage"]
                if not document.get("choices"):
                    continue  # the usage-only chunk: reported by `done`
            await self.socket.frame(f'{self.id_prefix},"type":"chunk","chunk":{payload.decode(errors="replace")}}}')

    async def _answer(self, body: bytes) -> None:
        """A complete answer: an error (the gateway's or the engine's own), or a whole completion from an engine that
        would not stream (sent as its one chunk)."""
        self.ended = True
        if self.status == 200:
            await self.socket.frame(f'{self.id_prefix},"type":"chunk","chunk":{body.decode(errors="replace")}}}')
            await self.socket.frame(f'{self.id_prefix},"type":"done","usage":null}}')
            return
        try:
            document = json.loads(body)
            error = (
                document["error"] if isinstance(document, dict) and isinstance(document.get("error"), dict) else None
            )
        except ValueError:
            error = None
        if error is None:
            error = {
                "message": body[:500].decode(errors="replace"),
                "type": "upstream_error",
                "param": None,
                "code": None,
            }
        frame = {"id": self.request_id, "type": "error", "status": self.status, "error": error}
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        await self.socket.frame(json.dumps(frame))
