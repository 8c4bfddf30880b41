"""daphne with the web process's transport limits: `python -m inferia_cli.transport.daphne_http` takes daphne's
own arguments.

Twisted already bounds header lines (16 KiB) but answers 400 past them, keeps a connection for as long as it sends
a byte a minute, and has no cap on connections. This channel answers 431 past INFERIA_MAX_HEADER_BYTES, 408 to
headers that take longer than INFERIA_HEADER_TIMEOUT_SECONDS or a body silent for INFERIA_BODY_TIMEOUT_SECONDS,
and 503 to connections past INFERIA_MAX_CONNECTIONS.
"""

from __future__ import annotations

from typing import Any

import daphne.server  # first: it installs the asyncio reactor that everything below must use
from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory
from twisted.internet import reactor
from twisted.internet.base import DelayedCall
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol

from inferia_cli.transport import (
    BODY_TOO_SLOW,
    HEADERS_TOO_LARGE,
    HEADERS_TOO_SLOW,
    TOO_MANY_CONNECTIONS,
    TransportLimits,
)

LIMITS = TransportLimits.from_env()


class GuardedHTTPChannel(HTTPChannel):
    """One connection. Twisted's own idle timeout (reset by every read) is set to the body timeout, and only a
    request in the middle of its body is told why it is closed; the header deadline is not reset by reads."""

    MAX_LENGTH = LIMITS.max_header_bytes  # one line (LineReceiver buffers up to this before giving up)
    totalHeadersSize = LIMITS.max_header_bytes

    _header_deadline: DelayedCall | None = None
    _in_body = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_header_deadline()

    def connectionLost(self, reason: Any) -> None:
        self._cancel_header_deadline()
        super().connectionLost(reason)

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse(HEADERS_TOO_LARGE)
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._refuse(HEADERS_TOO_LARGE)

    def allHeadersReceived(self) -> None:
        self._cancel_header_deadline()
        self._in_body = True
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        self._in_body = False
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        if not self.transport.disconnecting:
            self._arm_header_deadline()  # the next request on this connection

    def timeoutConnection(self) -> None:
        if self._in_body:
            self.transport.write(BODY_TOO_SLOW)
        super().timeoutConnection()

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = reactor.callLater(LIMITS.header_timeout_s, self._headers_late)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None and self._header_deadline.active():
            self._header_deadline.cancel()
        self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        # An idle kept-alive connection (no request begun) is closed without a word, as clients expect.
        self._refuse(HEADERS_TOO_SLOW if self.requests else b"")

    def _refuse(self, response: bytes) -> None:
        if self.transport.disconnecting:
            return
        if response:
            self.transport.write(response)
        self.loseConnection()


class _Refusal(Protocol):
    """What a connection past INFERIA_MAX_CONNECTIONS gets: a 503, then the door."""

    def connectionMade(self) -> None:
        self.transport.write(TOO_MANY_CONNECTIONS)
        self.transport.loseConnection()


class GuardedHTTPFactory(HTTPFactory):
    """daphne's factory, building guarded channels (inside Twisted's wrapper, which keeps HTTP/2 negotiation).

    Connections are counted by a ProtocolWrapper around each one rather than by the channel: daphne hands an
    upgraded connection to its WebSocket protocol, and the channel never hears that it closed; the wrapper does
    (daphne knows to swap what a wrapper wraps)."""

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.timeOut = LIMITS.body_timeout_s
        self.open_connections = 0

    def protocol(self) -> _GenericHTTPChannelProtocol:  # type: ignore[override]
        return _GenericHTTPChannelProtocol(GuardedHTTPChannel())

    def buildProtocol(self, addr: Any) -> Protocol | None:
        if self.open_connections >= LIMITS.max_connections:
            return _Refusal()
        channel = super().buildProtocol(addr)
        return None if channel is None else ProtocolWrapper(self, channel)

    def registerProtocol(self, protocol: ProtocolWrapper) -> None:
        self.open_connections += 1

    def unregisterProtocol(self, protocol: ProtocolWrapper) -> None:
        self.open_connections -= 1


def main() -> None:
    # daphne's Server builds its factory from this module-level name; its CLI offers no other way in.
    daphne.server.HTTPFactory = GuardedHTTPFactory  # type: ignore[misc]
    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
