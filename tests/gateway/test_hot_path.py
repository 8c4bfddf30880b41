"""The warm hot path never queries PostgreSQL, and invalid keys reach it once per cache period at most.

These run the ASGI application in this process (Channels' ApplicationCommunicator) so that Django's query capture
sees every query: under `async_to_sync`, the gateway's database lookups run on this very thread and connection.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import ApplicationCommunicator
from django.db import connections
from django.test.utils import CaptureQueriesContext

from apps.gateway.runtime import runtime_close
from inferia_site.asgi import application
from tests.factories import OrganizationFactory
from tests.gateway.conftest import make_deployment, make_key

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}


async def call(
    path: str, secret: str, body: dict | None = None, *, extensions: dict | None = None
) -> tuple[int, bytes]:
    """One request through the ASGI application: (status, body). `extensions`: the scope's (a server's body writer,
    for the fast relay; what it is given is not in the body returned)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "POST" if body is not None else "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {secret}".encode()), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "extensions": extensions or {},
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": json.dumps(body or {}).encode()})
    start = await communicator.receive_output(10)
    chunks = []
    while True:
        message = await communicator.receive_output(10)
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    await communicator.wait(10)
    return start["status"], b"".join(chunks)


@asynccontextmanager
async def queries_captured(connection):
    """Django's query capture, entered and left on the connection's own (sync) thread."""
    capture = CaptureQueriesContext(connection)
    await sync_to_async(capture.__enter__)()
    try:
        yield capture
    finally:
        await sync_to_async(capture.__exit__)(None, None, None)


def test_a_warm_request_makes_no_database_query(db, sim, redis_cache, settings):

    settings.INFERIA_GATEWAY_CATALOG_MAX_AGE = 600  # no periodic reload inside the measured window
    organization = OrganizationFactory(name="Acme", slug="acme")
    _key, secret = make_key(organization)
    make_deployment(organization, "gw-chat", [sim.url])
    connection = connections["default"]

    async def scenario() -> tuple[int, int, list[int]]:
        try:
            async with queries_captured(connection) as cold:
                first = await call("/v1/chat/completions", secret, CHAT)
            statuses = [first[0]]
            async with queries_captured(connection) as warm:
                for _ in range(5):
                    statuses.append((await call("/v1/chat/completions", secret, CHAT))[0])
                    statuses.append((await call("/v1/chat/completions", secret, {**CHAT, "stream": False}))[0])
                    statuses.append((await call("/v1/models", secret))[0])
            return len(cold), len(warm), statuses
        finally:
            await runtime_close()

    cold_queries, warm_queries, statuses = async_to_sync(scenario)()
    assert set(statuses) == {200}
    assert cold_queries > 0  # the capture does see the gateway's lookups (key and catalog)
    assert warm_queries == 0


def test_a_flood_of_one_invalid_key_reaches_postgresql_once(db, redis_cache):
    connection = connections["default"]

    async def scenario() -> tuple[int, list[int]]:
        try:
            async with queries_captured(connection) as captured:
                statuses = [(await call("/v1/models", "sk-inf-" + "x" * 43))[0] for _ in range(50)]
            return len(captured), statuses
        finally:
            await runtime_close()

    queries, statuses = async_to_sync(scenario)()
    assert set(statuses) == {401}
    assert queries == 1


def test_malformed_keys_never_reach_postgresql(db, redis_cache):
    connection = connections["default"]

    async def scenario() -> int:
        try:
            async with queries_captured(connection) as captured:
                for secret in ("", "not-ours", "sk-inf-" + "x" * 300):
                    assert (await call("/v1/models", secret))[0] == 401
            return len(captured)
        finally:
            await runtime_close()

    assert async_to_sync(scenario)() == 0
