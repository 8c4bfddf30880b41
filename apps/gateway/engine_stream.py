"""A lean HTTP/1.1 client for engines' streamed answers, for the fast relay.

aiohttp hands a streamed body to a task: each chunk the engine sends wakes the relay's task, which then sends it as
an ASGI message, so a 64-token answer costs 64 task wake-ups, message dicts and coroutine calls on top of the two
socket calls. Here the engine connection's own socket callback parses the response (httptools, in C) and hands
what each read brought, at once, to a sink that writes it to the client's connection (see
`inferia_cli.transport.uvicorn_http.BodyWriter`); the request's task sleeps until the answer ends, fails, or the
client falls behind. Used for streamed requests to Inferia's own replicas over plain HTTP; everything else
(external endpoints with TLS and the SSRF guard, complete answers) goes through aiohttp.

Connections are kept alive and reused like aiohttp's pool, for less than the engine keeps them (see
INFERIA_UPSTREAM_KEEPALIVE_SECONDS). A request on one that turns out closed, before any answer byte, is sent once
more on a new connection: the engine closed it while idle, it never took the request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# An error answer (4xx/5xx) is read whole before it is passed on; an engine's own are a few hundred bytes.
ERROR_BODY_MAX = 1024 * 1024


class EngineDisconnected(ConnectionError):
    """The engine closed the connection before its answer was complete."""


class EngineAnswerInvalid(ConnectionError):
    """The engine's answer is not HTTP/1.1 we can read (or an error body over ERROR_BODY_MAX)."""


@dataclass(frozen=True, slots=True)
class EngineTarget:
    """Where a replica's endpoint is: its address, and the request line and Host header that reach it."""

    host: str
    port: int
    head: bytes  # b"POST /v1/chat/completions HTTP/1.1\r\nHost: 10.0.0.5:8000\r\n"


class EngineConnection(asyncio.Protocol):
    """One connection to an engine, one request at a time. Before `stream` the answer's body is kept (`body`);
    after it, each read's body goes to the sink as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._request_reset()

    def _request_reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = b"application/json"
        self.keep_alive = False
        self.complete = False
        self.error: BaseException | None = None
        self.responded = False  # any byte of the answer arrived
        self.body: list[bytes] = []
        self.body_size = 0
        self.sink: Callable[[bytes], None] | None = None
        self.paused = False  # reading stopped until the client's connection drains
        self.last_read = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport (uvloop's is no asyncio.Transport)

    def data_received(self, data: bytes) -> None:
        self.responded = True
        self.last_read = self.loop.time()
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # the parser's own errors, and a sink's, end the answer alike
            self._fail(EngineAnswerInvalid(type(exc).__name__) if isinstance(exc, httptools.HttpParserError) else exc)
            return
        if self.sink is not None and self.body:
            # Everything this read completed, in one write: several chunks already buffered go out together.
            data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.body.clear()
            self.sink(data)
        if self._waiter is not None and (self.sink is None or self.complete):
            self._wake()  # a stream's task sleeps through its chunks: only its end (or a failure, a pause) wakes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._timer_cancel()
        if not self.complete and self.error is None:
            self.error = EngineDisconnected(str(exc) if exc else "closed")
        self._wake()

    # --- httptools callbacks ---------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if self.sink is None:
            self.body_size += len(body)
            if self.status != 200 and self.body_size > ERROR_BODY_MAX:
                raise EngineAnswerInvalid("error body too large")

    def on_message_complete(self) -> None:
        self.complete = True
        self._timer_cancel()

    # --- The request's side ----------------------------------------------------------------------------------------

    def request(self, head: bytes, body: bytes) -> None:
        self._timer_cancel()  # a timer of the last answer's must never fire on this one
        self._request_reset()
        assert self.transport is not None
        self.transport.write(head + body)

    async def first_byte(self) -> None:
        """Until the answer's status is known and, for a 200, its first body bytes came (or it ended or failed)."""
        while not (self.error is not None or self.complete or (self.status == 200 and self.body)):
            await self._wait()

    def stream(self, sink: Callable[[bytes], None], idle_timeout_s: float | None) -> None:
        """From now on each read's body goes to `sink` at once; `idle_timeout_s`: the longest silence allowed."""
        self.sink = sink
        # An answer already whole (a short one, or a fast engine's) arms no timer: nothing would cancel it.
        if idle_timeout_s and not self.complete and self.error is None:
            self.last_read = self.loop.time()
            self._idle_timer = self.loop.call_later(idle_timeout_s, self._idle_check, idle_timeout_s)

    async def streamed(self, drain: Callable[[], object]) -> None:
        """Until the answer ends (raises what failed it: EngineDisconnected, EngineAnswerInvalid, TimeoutError);
        while the client is behind, reading waits for `drain()` (an awaitable) to find room on its connection."""
        while self.error is None and not self.complete:
            if self.paused:
                await drain()  # type: ignore[misc]
                self.paused = False
                if self.transport is not None and not self.closed:
                    self.transport.resume_reading()
                continue
            await self._wait()
        if self.error is not None:
            raise self.error

    def pause(self) -> None:
        """Stop reading the engine until the client's connection drains (the sink found it full)."""
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
            self._wake()

    def body_bytes(self) -> bytes:
        return b"".join(self.body)

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self._timer_cancel()
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    # --- Internals -------------------------------------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.close()
        self._wake()

    def _idle_check(self, idle_timeout_s: float) -> None:
        # One timer per silence, not per chunk: each read only stamps `last_read`.
        self._idle_timer = None
        if self.complete or self.error is not None:
            return
        silent = self.loop.time() - self.last_read
        if silent >= idle_timeout_s and not self.paused:
            self._fail(TimeoutError())
            return
        wait = idle_timeout_s - silent if silent < idle_timeout_s else idle_timeout_s
        self._idle_timer = self.loop.call_later(wait, self._idle_check, idle_timeout_s)

    def _timer_cancel(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None


class EngineStreams:
    """The kept-alive connections of one event loop to engines, by address; idle ones are dropped after
    `keepalive_s`."""

    def __init__(self, keepalive_s: float) -> None:
        self.keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], deque[EngineConnection]] = {}
        self._targets: dict[str, EngineTarget | None] = {}

    def target(self, url: str) -> EngineTarget | None:
        """Where `url` is, or None when this client does not serve it (not plain HTTP)."""
        if url in self._targets:
            return self._targets[url]
        parts = urlsplit(url)
        target = None
        if parts.scheme == "http" and parts.hostname:
            port = parts.port or 80
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host_header = parts.netloc.rpartition("@")[2]
            head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
            target = EngineTarget(host=parts.hostname, port=port, head=head)
        if len(self._targets) > 10_000:  # replicas come and go: forget them all now and then
            self._targets.clear()
        self._targets[url] = target
        return target

    async def connection(self, target: EngineTarget, connect_timeout_s: float | None) -> tuple[EngineConnection, bool]:
        """A connection to `target` and whether it is a kept-alive one (which may turn out closed)."""
        loop = asyncio.get_running_loop()
        idle = self._idle.get((target.host, target.port))
        now = loop.time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.keepalive_s:
                return connection, True
            connection.close()
        async with asyncio.timeout(connect_timeout_s):
            _transport, connection = await loop.create_connection(
                lambda: EngineConnection(loop), target.host, target.port
            )
        return connection, False

    async def request(
        self, target: EngineTarget, head: bytes, body: bytes, connect_timeout_s: float | None
    ) -> EngineConnection:
        """Send the request and wait for the answer's first byte (`EngineConnection.first_byte`): on a kept-alive
        connection, and once more on a new one when the engine had closed that one without a byte of answer."""
        while True:
            connection, reused = await self.connection(target, connect_timeout_s)
            try:
                connection.request(head, body)
                await connection.first_byte()
            except BaseException:
                connection.close()
                raise
            if not (reused and connection.error is not None and not connection.responded):
                return connection
            connection.close()
            # The others kept for it are as old, or older: drop them, so that the next try is a new connection.
            for idle in self._idle.pop((target.host, target.port), ()):
                idle.close()

    def release(self, target: EngineTarget, connection: EngineConnection) -> None:
        """Keep `connection` for the next request to `target` when its answer ended cleanly; close it otherwise."""
        if not connection.reusable:
            connection.close()
            return
        now = connection.idle_since = connection.loop.time()
        connection.sink = None
        idle = self._idle.setdefault((target.host, target.port), deque())
        # Reuse takes the newest; the oldest are dropped here once the engine closed them or they idled too long.
        while idle and (idle[0].closed or now - idle[0].idle_since >= self.keepalive_s):
            idle.popleft().close()
        idle.append(connection)

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()


def request_head(target: EngineTarget, headers: dict[str, str], body: bytes) -> bytes:
    """The request's line and headers; a header that could split the request (CR or LF in it) is refused."""
    lines = [target.head, b"Content-Length: %d\r\n" % len(body)]
    for name, value in headers.items():
        line = f"{name}: {value}\r\n"
        if "\r" in line[:-2] or "\n" in line[:-2]:
            raise ValueError(f"header {name!r} holds a line break")
        lines.append(line.encode("latin-1"))
    lines.append(b"\r\n")
    return b"".join(lines)
