"""Streaming behaviour that needs real timing and real processes: unbuffered relay, client disconnect, failover
when a replica dies under load, key revocation reaching a running gateway, and draining on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Iterator

import aiohttp
import pytest
from django.conf import settings

from tests.gateway.conftest import SIM_MODELS, http, make_deployment, wait_until_served
from tests.kit.processes import TestProcess, running_sim, sim_start, web_start
from tests.kit.waiting import eventually

CHAT = {"model": "gw-other", "messages": [{"role": "user", "content": "tell me"}], "stream": True}


def sim_running_requests(sim_url: str) -> float:
    with urllib.request.urlopen(f"{sim_url}/metrics", timeout=5) as response:  # noqa: S310 (loopback)
        for line in response.read().decode().splitlines():
            if line.startswith("vllm:num_requests_running"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("the engine does not report vllm:num_requests_running")


async def _event_arrivals(url: str, secret: str, body: dict) -> list[float]:
    arrivals = []
    async with aiohttp.ClientSession() as session:
        headers = {"authorization": f"Bearer {secret}"}
        async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status == 200
            buffer = b""
            async for data in response.content.iter_any():
                buffer += data
                while b"\n\n" in buffer:
                    _event, buffer = buffer.split(b"\n\n", 1)
                    arrivals.append(time.perf_counter())
    return arrivals


def test_chunks_are_forwarded_as_the_engine_sends_them(tenant, gateway):
    itl_s = 0.05
    with running_sim("--itl-ms", str(itl_s * 1000), models=SIM_MODELS) as engine:
        make_deployment(tenant.organization, "gw-other", [engine.url])
        wait_until_served(gateway, tenant.secret, "gw-other")
        arrivals = asyncio.run(_event_arrivals(gateway.url, tenant.secret, {**CHAT, "max_tokens": 10}))
    # role event, 10 tokens (the first comes with no inter-token wait), [DONE]: events spread over ~9 gaps of 50 ms,
    # each within 50 ms of when the engine sends it, not in a burst at the end.
    assert len(arrivals) == 12
    first = arrivals[1]
    for index, arrival in enumerate(arrivals[2:-1], start=1):
        expected = first + index * itl_s
        assert expected - 0.01 <= arrival <= expected + itl_s, (index, arrival - first)


def test_a_client_that_disconnects_cancels_the_upstream_request(tenant, gateway, redis_cache):
    with running_sim("--itl-ms", "50", models=SIM_MODELS) as engine:
        make_deployment(tenant.organization, "gw-other", [engine.url])
        wait_until_served(gateway, tenant.secret, "gw-other")

        async def read_a_little_then_leave() -> None:
            async with aiohttp.ClientSession() as session:
                headers = {"authorization": f"Bearer {tenant.secret}"}
                body = {**CHAT, "max_tokens": 400}  # 20 s if nobody stopped it
                async with session.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as response:
                    received = 0
                    async for _data in response.content.iter_any():
                        received += 1
                        if received >= 4:
                            break
                    assert sim_running_requests(engine.url) == 1
                    response.close()

        asyncio.run(read_a_little_then_leave())
        eventually(lambda: sim_running_requests(engine.url) == 0, timeout=2, what="the engine's request cancelled")

    eventually(lambda: redis_cache.xlen(settings.INFERIA_USAGE_STREAM), timeout=2, what="a usage event")
    (entry,) = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    event = json.loads(entry[1][b"e"])
    assert event["out"] == "cancelled"
    assert event["est"] is True
    assert 1 <= event["ct"] < 400


@pytest.fixture(scope="module")
def daphne_gateway(test_database_url: str) -> Iterator[TestProcess]:
    process = web_start(test_database_url, server="daphne")
    yield process
    process.stop()


async def _leave_before_the_first_token(url: str, secret: str, body: dict, engine_url: str) -> None:
    """Send `body`, wait until the engine runs it (it holds the first token back), then close the connection."""
    async with aiohttp.ClientSession() as session:
        headers = {"authorization": f"Bearer {secret}"}
        request = asyncio.ensure_future(session.post(f"{url}/v1/chat/completions", json=body, headers=headers))
        deadline = time.monotonic() + 10
        while await asyncio.to_thread(sim_running_requests, engine_url) != 1:
            assert time.monotonic() < deadline, "the engine never got the request"
            await asyncio.sleep(0.02)
        assert not request.done()
        request.cancel()  # aiohttp closes the connection of a request cancelled before its answer
        with contextlib.suppress(asyncio.CancelledError):
            await request


# Past 64 KB the server stops reading the client until the application takes the body: after it, the client's
# leaving must still be seen, with nothing written to it yet.
@pytest.mark.parametrize(("stream", "prompt_bytes"), [(True, 20), (False, 20), (True, 200_000)])
@pytest.mark.parametrize("server", ["uvicorn", "daphne"])
def test_a_client_that_leaves_before_the_first_token_cancels_the_engine_request(
    request, tenant, redis_cache, server, stream, prompt_bytes
):
    web = request.getfixturevalue("gateway" if server == "uvicorn" else "daphne_gateway")
    with running_sim("--ttft-ms", "20000", "--max-model-len", "131072", models=SIM_MODELS) as engine:
        make_deployment(tenant.organization, "gw-other", [engine.url])
        wait_until_served(web, tenant.secret, "gw-other")
        body = {**CHAT, "stream": stream, "messages": [{"role": "user", "content": "x" * prompt_bytes}]}
        asyncio.run(_leave_before_the_first_token(web.url, tenant.secret, body, engine.url))
        eventually(lambda: sim_running_requests(engine.url) == 0, timeout=2, what="the engine's request cancelled")

    eventually(lambda: redis_cache.xlen(settings.INFERIA_USAGE_STREAM), timeout=2, what="a usage event")
    (entry,) = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    event = json.loads(entry[1][b"e"])
    assert (event["out"], event["st"]) == ("cancelled", 499)


async def _load(url: str, secret: str, *, seconds: float, concurrency: int) -> list[tuple[int, bool, bool]]:
    """Streams for `seconds`: per request (status, got a first byte, ended cleanly with [DONE])."""
    results: list[tuple[int, bool, bool]] = []
    stop_at = time.monotonic() + seconds
    headers = {"authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while time.monotonic() < stop_at:
                try:
                    async with session.post(
                        f"{url}/v1/chat/completions", json={**CHAT, "max_tokens": 20}, headers=headers
                    ) as response:
                        body = b""
                        async for data in response.content.iter_any():
                            body += data
                        results.append((response.status, bool(body), body.endswith(b"data: [DONE]\n\n")))
                except aiohttp.ClientError:
                    results.append((0, False, False))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def test_no_request_fails_before_its_first_byte_when_a_replica_dies(tenant, gateway):
    doomed, survivor = sim_start("--itl-ms", "5", models=SIM_MODELS), sim_start("--itl-ms", "5", models=SIM_MODELS)
    try:
        make_deployment(tenant.organization, "gw-other", [doomed.url, survivor.url])
        wait_until_served(gateway, tenant.secret, "gw-other")

        async def load_while_killing() -> list[tuple[int, bool, bool]]:
            load = asyncio.ensure_future(_load(gateway.url, tenant.secret, seconds=2.5, concurrency=16))
            await asyncio.sleep(0.8)
            doomed.kill()
            return await load

        results = asyncio.run(load_while_killing())
    finally:
        doomed.stop()
        survivor.stop()
    assert len(results) > 50
    # Every request got a 200 and a first byte; only streams already under way on the dead replica may end early.
    assert {status for status, _, _ in results} == {200}
    assert all(first_byte for _, first_byte, _ in results)
    broken = sum(1 for _, _, clean in results if not clean)
    assert broken <= 16


def test_a_revoked_key_is_refused_within_a_second(tenant, gateway):
    from apps.keys.services import api_key_revoke

    assert http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)[0] == 200  # now cached in the process
    api_key_revoke(key=tenant.key, reason="test")
    eventually(
        lambda: http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)[0] != 200,
        timeout=1.0,
        interval=0.01,
        what="the revoked key refused",
    )
    assert http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)[0] == 401


@pytest.mark.slow
def test_sigterm_lets_open_streams_finish(tenant, test_database_url):
    with running_sim("--itl-ms", "20", models=SIM_MODELS) as engine:
        make_deployment(tenant.organization, "gw-other", [engine.url])
        web = web_start(test_database_url, extra_env={"INFERIA_DRAIN_SECONDS": "10"})
        try:
            wait_until_served(web, tenant.secret, "gw-other")

            async def stream_across_sigterm() -> bytes:
                async with aiohttp.ClientSession() as session:
                    headers = {"authorization": f"Bearer {tenant.secret}"}
                    body = {**CHAT, "max_tokens": 50}  # about a second
                    async with session.post(f"{web.url}/v1/chat/completions", json=body, headers=headers) as response:
                        received = await response.content.readany()
                        web.popen.send_signal(signal.SIGTERM)
                        async for data in response.content.iter_any():
                            received += data
                        return received

            received = asyncio.run(stream_across_sigterm())
            assert received.endswith(b"data: [DONE]\n\n")
            # uvicorn re-raises the signal once drained, so "exited by SIGTERM" is its clean exit.
            assert web.popen.wait(10) in (0, -signal.SIGTERM)
        finally:
            web.stop()
