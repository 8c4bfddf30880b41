"""uvicorn's httptools protocol with the web process's transport limits (`inferia --http` points uvicorn here).

uvicorn has no limit on header size (httptools buffers a header until it ends, however long) and no timeout while
a request's headers or body arrive (`timeout_keep_alive` covers only idle connections between requests). This
adds both, plus a cap on open connections, at the cost of one comparison per read and one timer per request.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from inferia_cli.transport import (
    BODY_TOO_SLOW,
    HEADERS_TOO_LARGE,
    HEADERS_TOO_SLOW,
    TOO_MANY_CONNECTIONS,
    TransportLimits,
)
from inferia_runtime.body_writer import BODY_WRITER, ON_CLIENT_GONE

LIMITS = TransportLimits.from_env()


class BodyWriter:
    """Writes body bytes of the request's response straight to the connection, framed as `send` would frame them:
    no message dict, no coroutine, callable from a socket callback. For a streamed response already started with
    `http.response.start` (its end still goes through `send`). `write` tells whether the client keeps up: False
    once its connection's buffer is over the high-water mark (then `drain` waits for room) or the client is gone.

    It also tells whoever asked (`on_client_gone`) that the client left before the response was complete: one call
    from the connection's own callback, where uvicorn's way is a task per request waiting on `receive()`.

    It refers to its request's cycle weakly: the cycle's scope holds the writer, and a strong reference back would
    make every request a reference cycle, its scope and buffers freed only by the garbage collector."""

    __slots__ = ("_client_gone", "_cycle")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = weakref.ref(cycle)
        self._client_gone: Callable[[], None] | None = None

    def write(self, data: bytes) -> bool:
        cycle = self._cycle()
        if cycle is None or cycle.disconnected or cycle.response_complete:
            return False
        if cycle.chunked_encoding:
            cycle.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            cycle.expected_content_length -= len(data)
            cycle.transport.write(data)
        return not cycle.flow.write_paused

    async def drain(self) -> None:
        cycle = self._cycle()
        if cycle is not None and not cycle.disconnected:
            await cycle.flow.drain()

    def on_client_gone(self, callback: Callable[[], None] | None) -> None:
        """Call `callback` if the client leaves before the response is complete (None: no longer). Reading the
        connection resumes, as `receive()` would resume it: a client's leaving is seen only while it is read."""
        self._client_gone = callback
        cycle = self._cycle()
        if callback is not None and cycle is not None:
            cycle.flow.resume_reading()

    def connection_lost(self) -> None:
        callback, self._client_gone = self._client_gone, None
        cycle = self._cycle()
        if callback is not None and cycle is not None and cycle.disconnected:  # uvicorn's mark: not complete
            callback()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. `_header_room` is what the current request's headers may still take (None once they are
    complete); `_deadline` is the timer of the phase in progress. Timers exist only for a connection that has just
    opened and for a request that spans several reads: one that arrives whole (the usual case) costs none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_room: int | None = LIMITS.max_header_bytes
        self._body_pending = False
        self._deadline: asyncio.TimerHandle | None = None
        self._body_read_at = 0.0
        self._writer: BodyWriter | None = None  # the latest request's

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > LIMITS.max_connections:
            self._refuse(TOO_MANY_CONNECTIONS)
            return
        self._deadline = self.loop.call_later(LIMITS.header_timeout_s, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)
        if self._writer is not None:
            self._writer.connection_lost()

    def data_received(self, data: bytes) -> None:
        room = self._header_room
        if room is None or len(data) <= room:
            if room is not None:
                self._header_room = room - len(data)
            super().data_received(data)
        else:
            # Past the limit unless the headers end within it: parse only that much, so nothing more is buffered.
            self._header_room = 0
            super().data_received(data[:room])
            if self.transport.is_closing():
                return
            if self._header_room is not None:
                self._refuse(HEADERS_TOO_LARGE)
                return
            super().data_received(data[room:])
        if self._body_pending:
            self._body_read_at = self.loop.time()
            if self._deadline is None:
                self._deadline = self.loop.call_later(LIMITS.body_timeout_s, self._body_late)
        elif self._deadline is None and self._header_room is not None and self._header_room < LIMITS.max_header_bytes:
            # A request begun on a kept-alive connection: its own time for the rest of its headers.
            self._deadline = self.loop.call_later(LIMITS.header_timeout_s, self._headers_late)

    def on_headers_complete(self) -> None:
        self._header_room = None
        self._cancel_deadline()
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._writer = BodyWriter(self.cycle)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[BODY_WRITER] = self._writer
            extensions[ON_CLIENT_GONE] = self._writer.on_client_gone
        # A WebSocket is handed to a protocol with timeouts of its own.
        self._body_pending = not (self.parser.should_upgrade() and self._should_upgrade())

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._header_room = LIMITS.max_header_bytes
        self._cancel_deadline()
        super().on_message_complete()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        # Only a request begun is answered: an idle connection is closed without a word, as clients expect, and so
        # is one whose previous answer is still going out (pipelining).
        begun = self._header_room != LIMITS.max_header_bytes
        answerable = self.cycle is None or self.cycle.response_complete
        self._refuse(HEADERS_TOO_SLOW if begun and answerable else b"")

    def _body_late(self) -> None:
        self._deadline = None
        if not self._body_pending:
            return
        silent_for = self.loop.time() - self._body_read_at
        if silent_for < LIMITS.body_timeout_s or self.flow.read_paused:
            # Data came meanwhile, or we stopped reading (the application is behind): not the client's fault.
            wait = max(LIMITS.body_timeout_s - silent_for, 0.05)
            self._deadline = self.loop.call_later(wait, self._body_late)
            return
        answered = self.cycle is not None and self.cycle.response_started
        if self.cycle is not None:
            self.cycle.disconnected = True  # the application's receive() gets http.disconnect, its sends are dropped
        self._refuse(b"" if answered else BODY_TOO_SLOW)

    def _refuse(self, response: bytes) -> None:
        if self.transport.is_closing():
            return
        if response:
            self.transport.write(response)
        self.transport.close()
