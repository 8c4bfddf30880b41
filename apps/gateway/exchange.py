"""One HTTP request/response on `/v1` as the pipeline sees it: the request's headers and body, and the few ways
of answering (a JSON document, an error, or a stream of server-sent events).

Header lists are built once at import; per request only the request id is added.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from apps.gateway.errors import GatewayError
from inferia_runtime.random_ids import random_hex

if TYPE_CHECKING:
    from apps.gateway.capture import AnswerCapture
    from inferia_runtime.body_writer import BodyWriter

Send = Callable[[dict[str, Any]], Awaitable[None]]

REQUEST_ID_HEADER = b"x-request-id"
CLIENT_REQUEST_ID_HEADER = b"x-client-request-id"  # OpenAI's name for a caller's own id
CLIENT_REQUEST_ID_MAX = 128
# A caller's id is stored and shown: printable ASCII without spaces, bounded (anything else is a 400).
_CLIENT_REQUEST_ID_OK = re.compile(rb"[\x21-\x7e]{1,%d}" % CLIENT_REQUEST_ID_MAX)
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-like proxies in front of us not to buffer the stream
]
_END = {"type": "http.response.body", "body": b"", "more_body": False}


def client_request_id_valid(value: bytes) -> bool:
    """Whether a caller's own request id is one we store (printable ASCII without spaces, bounded)."""
    return _CLIENT_REQUEST_ID_OK.fullmatch(value) is not None


class Exchange:
    """The request's parts the gateway reads, and the response state it must respect."""

    __slots__ = (
        "__weakref__",
        "answer_capture",
        "authorization",
        "body",
        "body_writer",
        "client_gone",
        "client_request_id",
        "client_request_id_bytes",
        "complete",
        "content_length",
        "extra_headers",
        "finishing",
        "headers",
        "held",
        "key_hash",
        "method",
        "model",
        "path",
        "request_id",
        "request_id_bytes",
        "response_started",
        "retrieved",
        "send",
        "served_by",
        "served_provider",
        "session_id",
        "started",
        "started_wall",
        "status",
    )

    def __init__(self, scope: dict[str, Any], send: Send) -> None:
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.send = send
        # Set by the consumers whose answers go out as the engine sent them, where the server offers it.
        self.body_writer: BodyWriter | None = None
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.body = b""
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.authorization: bytes | None = None
        # The caller's key by its hash, when the connection proved it without the secret (a socket token, see
        # apps.gateway.chat_socket); None: the key is the `Authorization` header's.
        self.key_hash: str | None = None
        self.session_id: str | None = None
        self.content_length: int | None = None
        # Added to whatever response goes out (the policy's `x-ratelimit-*`); empty for most requests.
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.retrieved: bytes | None = None  # the chunks retrieval used, as JSON (apps.gateway.retrieval)
        self.served_by = ""  # the served name of the deployment whose engine answered (apps.gateway.upstream)
        self.served_provider = ""  # and the name of that deployment's provider
        # For the end-to-end latency metric: the model asked for (set once parsed) and the status answered with (an
        # error that ends a started stream replaces the 200 its start sent).
        self.model = ""
        self.status = 0
        client_request_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                # Two keys are ambiguous, and /api refuses them: an empty value makes the pipeline answer 401.
                self.authorization = value if self.authorization is None else b""
            elif name in (REQUEST_ID_HEADER, CLIENT_REQUEST_ID_HEADER):
                client_request_id = value
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == b"x-session-id":
                self.session_id = value.decode("latin-1")
        # The id of everything keyed by request (usage record, concurrency slot, reservation, audit context) is
        # always ours: callers that reuse an id must not share a slot or overwrite each other's usage.
        self.request_id = random_hex(16)
        self.request_id_bytes = self.request_id.encode()
        # The caller's id, echoed and recorded beside ours; None when absent, b"" when malformed (a 400 once the
        # caller is known, see `pipeline.request_headers_check`).
        self.client_request_id_bytes = client_request_id
        self.client_request_id = ""
        if client_request_id is not None:
            if not client_request_id_valid(client_request_id):
                self.client_request_id_bytes = b""
            else:
                self.client_request_id = client_request_id.decode()
        self.response_started = False
        self.complete = False  # the response's last byte was sent
        self.client_gone = False  # set when the client disconnected; the pipeline then stops and meters
        self.finishing = False  # set once everything has been sent but the end: a disconnect no longer matters
        self.held = b""  # the last byte of a complete answer, sent by `stream_end` once the request is metered
        # The answer's text, gathered only for an organisation that opted in to capture (see apps.gateway.capture).
        self.answer_capture: AnswerCapture | None = None

    def id_headers(self) -> list[tuple[bytes, bytes]]:
        """Our request id, and the caller's own id echoed back when it sent a valid one."""
        if self.client_request_id:
            return [
                (REQUEST_ID_HEADER, self.request_id_bytes),
                (CLIENT_REQUEST_ID_HEADER, self.client_request_id_bytes),  # type: ignore[list-item]
            ]
        return [(REQUEST_ID_HEADER, self.request_id_bytes)]

    async def respond(
        self, status: int, body: bytes, content_type: bytes = b"application/json", *, hold_last_byte: bool = False
    ) -> None:
        """A complete response with a body. With `hold_last_byte`, all but the body's last byte go now and the
        response ends with `stream_end`: a client never holds a whole answer whose usage was not yet recorded."""
        self.response_started = True
        self.status = status
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (b"content-length", b"%d" % len(body)),
                    *self.id_headers(),
                    *self.extra_headers,
                ],
            }
        )
        if hold_last_byte and body:
            self.held = body[-1:]
            self.finishing = True  # the answer is out: a client leaving now still gets it metered as answered
            await self.send({"type": "http.response.body", "body": body[:-1], "more_body": True})
            return
        self.finishing = self.complete = True
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def respond_error(self, error: GatewayError, *, close: bool = False) -> None:
        """The error as a JSON response, or as the stream's last event when streaming has already begun."""
        self.status = error.status
        if self.response_started:
            await self.send({"type": "http.response.body", "body": error.sse_event(), "more_body": True})
            return
        body = error.body()
        headers = [_JSON, (b"content-length", b"%d" % len(body)), *self.id_headers()]
        headers += self.extra_headers
        headers += error.headers
        if close:
            headers.append((b"connection", b"close"))
        self.response_started = True
        self.finishing = self.complete = True
        await self.send({"type": "http.response.start", "status": error.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def stream_start(self) -> None:
        """Begin a `text/event-stream` response; events follow with `stream_event`."""
        self.response_started = True
        self.status = 200
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_SSE_HEADERS, *self.id_headers(), *self.extra_headers],
            }
        )

    async def stream_end(self) -> None:
        """End a streamed response, or a complete one's held last byte (nothing to do when the response is already
        complete)."""
        if self.complete:
            return
        self.finishing = self.complete = True
        await self.send({**_END, "body": self.held} if self.held else _END)
