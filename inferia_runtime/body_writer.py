"""The ASGI scope extension through which the default web server lets the gateway write a started response's body
without an ASGI message (see `inferia_cli.transport.uvicorn_http.BodyWriter`, and `apps.gateway.engine_stream` for
why). A server without it gets the ordinary `http.response.body` messages."""

from __future__ import annotations

from typing import Protocol

BODY_WRITER = "inferia.body_writer"


class BodyWriter(Protocol):
    def write(self, data: bytes) -> bool:
        """Send `data` as more of the body; False once the client is behind (or gone): wait for `drain`."""
        ...

    async def drain(self) -> None:
        """Until the client's connection has room again (at once when it is gone)."""
        ...
