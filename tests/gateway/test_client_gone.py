"""A client that leaves while the answer's head is still on its way (the server's write waiting for room on the
client's connection) stops the engine too, through either relay: the engine connection is closed, not left to
generate the rest of the answer into a buffer nobody reads."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from apps.gateway.runtime import runtime_close
from inferia_runtime.body_writer import BODY_WRITER, ON_CLIENT_GONE
from inferia_site.asgi import application
from tests.factories import OrganizationFactory
from tests.gateway.conftest import SIM_MODELS, make_deployment, make_key
from tests.gateway.test_streaming_and_failover import sim_running_requests
from tests.kit.processes import running_sim
from tests.kit.waiting import eventually


class _StalledClient:
    """A server's side of one request whose client stops reading: the answer's head never finishes going out."""

    def __init__(self) -> None:
        self.head_sent = asyncio.Event()
        self.gone: Callable[[], None] | None = None

    def on_client_gone(self, callback: Callable[[], None] | None) -> None:
        self.gone = callback

    def write(self, data: bytes) -> bool:
        return True

    async def drain(self) -> None:
        return None

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.head_sent.set()
            await asyncio.Event().wait()  # as uvicorn's send waits for the connection to drain

    async def receive(self) -> dict[str, Any]:
        return {"type": "http.request", "body": json.dumps(CHAT).encode()}


CHAT = {"model": "gw-other", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": True}


@pytest.mark.parametrize("relay", ["fast", "general"])
def test_a_client_gone_while_the_head_waits_to_go_out_stops_the_engine(db, redis_cache, monkeypatch, relay):
    # As Channels' test communicator does: its database calls must not close the test's connection (its transaction).
    monkeypatch.setattr("channels.db.close_old_connections", lambda: None)
    organization = OrganizationFactory(name="Acme", slug="acme")
    _key, secret = make_key(organization)
    with running_sim("--itl-ms", "50", models=SIM_MODELS) as engine:  # 400 tokens: 20 s if nobody stops it
        make_deployment(organization, "gw-other", [engine.url])
        client = _StalledClient()
        extensions: dict[str, Any] = {ON_CLIENT_GONE: client.on_client_gone}
        if relay == "fast":
            extensions[BODY_WRITER] = client
        scope = {
            "type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions", "query_string": b"",
            "headers": [(b"authorization", f"Bearer {secret}".encode()), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "extensions": extensions,
        }  # fmt: skip

        async def scenario() -> None:
            try:
                task = asyncio.ensure_future(application(scope, client.receive, client.send))
                await asyncio.wait_for(client.head_sent.wait(), 10)
                assert await asyncio.to_thread(sim_running_requests, engine.url) == 1
                assert client.gone is not None
                client.gone()
                await asyncio.wait_for(task, 10)  # the request ends (recorded as cancelled) rather than raising
            finally:
                await runtime_close()

        async_to_sync(scenario)()
        eventually(lambda: sim_running_requests(engine.url) == 0, timeout=2, what="the engine's request cancelled")
