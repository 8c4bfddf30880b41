"""Running the simulator: `SimServer` for embedding it (tests, benchmarks) and `serve` to run until cancelled."""

from __future__ import annotations

import asyncio
import logging

from inferia_sim.config import SimConfig
from inferia_sim.engine import SimEngine
from inferia_sim.http import HttpConnection
from inferia_sim.routes import request_handler

logger = logging.getLogger("inferia_sim")


class SimServer:
    """A listening simulated engine on the current event loop."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.engine = SimEngine(config)
        self._connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None
        self.port = config.port

    @property
    def url(self) -> str:
        """Base URL clients use (without `/v1`)."""
        host = self.config.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard bind is reached through loopback locally
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        handler = request_handler(self.engine)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(handler, self._connections),
            self.config.host,
            self.config.port,
            backlog=4096,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop open connections, cancelling their requests."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self._connections):
            if connection.transport is not None:
                connection.transport.close()
        await self._server.wait_closed()
        self._server = None


async def serve(config: SimConfig) -> None:
    """Serve until cancelled, logging one start-up line with the URL and the served models."""
    server = SimServer(config)
    await server.start()
    logger.info(
        "inferia-sim (simulated vLLM engine, no real model) listening on %s serving %s",
        server.url,
        ", ".join(config.models),
    )
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
