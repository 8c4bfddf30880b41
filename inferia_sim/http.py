"""A minimal HTTP/1.1 server on asyncio + httptools: keep-alive, pipelining, Content-Length and chunked responses.

It exists because the simulator must be much cheaper per request than the gateway it is used to benchmark; a full
web framework costs several times more CPU per request than this.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import cast

import httptools

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024 * 1024
SERVER_HEADER = b"server: inferia-sim\r\n"
_STATUS_LINES = {status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode()) for status in HTTPStatus}
_STREAM_END = b"0\r\n\r\n"


class HttpRequest:
    """One parsed request. Headers are not kept: nothing the simulator does depends on them."""

    __slots__ = ("body", "keep_alive", "method", "path", "query")

    def __init__(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> None:
        path, _, query = url.partition(b"?")
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.keep_alive = keep_alive


def chunk_frame(payload: bytes) -> bytes:
    """`payload` framed as one chunk of a `Transfer-Encoding: chunked` body."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class HttpResponder:
    """What a request handler writes its response through; it owns the connection until the handler returns."""

    __slots__ = ("_connection", "keep_alive", "started")

    def __init__(self, connection: HttpConnection, keep_alive: bool) -> None:
        self._connection = connection
        self.keep_alive = keep_alive
        self.started = False

    @property
    def closed(self) -> bool:
        transport = self._connection.transport
        return transport is None or transport.is_closing()

    def response_head(self, status: int, content_type: bytes, *, content_length: int | None) -> bytes:
        """Status line and headers; `content_length=None` means a chunked body follows."""
        self.started = True
        head = [_STATUS_LINES[status], SERVER_HEADER]
        if content_type:
            head.append(b"content-type: %s\r\n" % content_type)
        if content_length is None:
            head.append(b"transfer-encoding: chunked\r\n")
        else:
            head.append(b"content-length: %d\r\n" % content_length)
        if not self.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        return b"".join(head)

    def send(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        """A complete response with a Content-Length body."""
        self.write(self.response_head(status, content_type, content_length=len(body)) + body)

    def write(self, data: bytes) -> None:
        transport = self._connection.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def drain(self) -> None:
        """Wait while the client is not reading, so a slow reader does not make the server buffer without bound."""
        waiter = self._connection.drain_waiter
        if waiter is not None:
            await waiter

    def close(self) -> None:
        """Close the connection after what was already written has been sent (a truncated response if unfinished)."""
        self.keep_alive = False
        transport = self._connection.transport
        if transport is not None:
            transport.close()

    @staticmethod
    def stream_end() -> bytes:
        """The terminating chunk of a chunked body."""
        return _STREAM_END


RequestHandler = Callable[[HttpRequest, HttpResponder], Awaitable[None]]


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler for each, one at a time, in arrival order.

    When the client goes away the running handler task is cancelled, so generation stops at once.
    """

    def __init__(self, handler: RequestHandler, connections: set[HttpConnection]) -> None:
        self._handler = handler
        self._connections = connections
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._pending: deque[HttpRequest] = deque()
        self._task: asyncio.Task[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it, so no isinstance check here.
        self.transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self.transport = None
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.cancel()

    def pause_writing(self) -> None:
        if self.drain_waiter is None:
            self.drain_waiter = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(HTTPStatus.BAD_REQUEST, b"protocol upgrades are not supported")
        except httptools.HttpParserError:
            self._reject(HTTPStatus.BAD_REQUEST, b"malformed HTTP request")
        except _BodyTooLarge:
            self._reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, b"request body too large")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # curl sends `Expect: 100-continue` for bodies over 1 KiB and waits a second for this go-ahead otherwise.
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > MAX_BODY_BYTES:
            raise _BodyTooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = HttpRequest(self._parser.get_method(), self._url, body, self._parser.should_keep_alive())
        if self._task is None:
            self._start(request)
        else:
            self._pending.append(request)  # pipelined: answered after the one in progress

    # request lifecycle

    def _start(self, request: HttpRequest) -> None:
        responder = HttpResponder(self, request.keep_alive)
        self._task = asyncio.get_running_loop().create_task(self._run(request, responder))

    async def _run(self, request: HttpRequest, responder: HttpResponder) -> None:
        try:
            await self._handler(request, responder)
        except asyncio.CancelledError:
            return  # the client went away (or the server is shutting down): nothing left to answer
        except Exception:
            logger.exception("unhandled error answering %s %s", request.method, request.path)
            if responder.started:
                responder.close()
            else:
                responder.keep_alive = False
                responder.send(500, b'{"error":{"message":"internal simulator error","type":"InternalServerError",'
                                    b'"param":null,"code":500}}')  # fmt: skip
        self._task = None
        if self.transport is None:
            return
        if not responder.keep_alive:
            self.transport.close()
        elif self._pending:
            self._start(self._pending.popleft())

    def _reject(self, status: HTTPStatus, message: bytes) -> None:
        if self.transport is None:
            return
        body = b'{"error":{"message":"%s","type":"BadRequestError","param":null,"code":%d}}' % (message, status)
        self.transport.write(
            _STATUS_LINES[status] + SERVER_HEADER + b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


class _BodyTooLarge(Exception):
    """The request body passed the simulator's size limit."""
