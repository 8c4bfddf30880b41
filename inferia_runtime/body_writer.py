"""The ASGI scope extensions through which the default web server lets the gateway write a started response's body
without an ASGI message (see `inferia_cli.transport.uvicorn_http.BodyWriter`, and `apps.gateway.engine_stream` for
why), and hear that the client left without a task waiting on `receive()` for it. A server without them gets the
ordinary `http.response.body` messages, and the gateway watches `receive()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

BODY_WRITER = "inferia.body_writer"
# A callable taking a callback (or None, to stop): the server calls the callback once, from the event loop, if the
# client's connection is lost before the response is complete.
ON_CLIENT_GONE = "inferia.on_client_gone"

OnClientGone = Callable[[Callable[[], None] | None], None]


class BodyWriter(Protocol):
    def write(self, data: bytes) -> bool:
        """Send `data` as more of the body; False once the client is behind (or gone): wait for `drain`."""
        ...

    async def drain(self) -> None:
        """Until the client's connection has room again (at once when it is gone)."""
        ...
