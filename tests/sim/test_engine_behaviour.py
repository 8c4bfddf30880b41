"""How the simulated engine behaves under load and trouble: queueing, timing, disconnects, failures, start-up."""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import socket
import time
from urllib.parse import urlsplit

import aiohttp
import pytest

from inferia_sim.config import FailureType
from inferia_sim.testing import running_sim
from tests.kit.waiting import eventually
from tests.sim.conftest import chat_body, connect, metrics, post, request, sse_events

LABEL = '{model_name="inferia/sim-model"}'


async def _stream_chat(session: aiohttp.ClientSession, url: str, max_tokens: int) -> list[float]:
    """Arrival times of each SSE event of one streamed chat completion."""
    arrivals = []
    async with session.post(url + "/v1/chat/completions", json=chat_body(stream=True, max_tokens=max_tokens)) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic())
    return arrivals


def _running_and_waiting(url: str) -> tuple[float, float]:
    samples = metrics(url)
    return samples["vllm:num_requests_running" + LABEL], samples["vllm:num_requests_waiting" + LABEL]


@pytest.mark.asyncio
async def test_requests_beyond_max_num_seqs_wait_and_show_as_waiting():
    with running_sim(max_num_seqs=2, itl_ms=20) as sim:
        async with aiohttp.ClientSession() as session:
            streams = [asyncio.create_task(_stream_chat(session, sim.url, max_tokens=10)) for _ in range(6)]
            seen = await asyncio.to_thread(
                eventually, lambda: _running_and_waiting(sim.url) == (2, 4), interval=0.02, what="2 running, 4 waiting"
            )
            kv_usage = (await asyncio.to_thread(metrics, sim.url))["vllm:kv_cache_usage_perc" + LABEL]
            results = await asyncio.gather(*streams)
        final = await asyncio.to_thread(metrics, sim.url)

    assert seen
    assert kv_usage > 0
    assert all(len(arrivals) == 12 for arrivals in results)  # role chunk + 10 tokens + [DONE]
    assert final["vllm:num_requests_running" + LABEL] == 0
    assert final["vllm:num_requests_waiting" + LABEL] == 0
    assert final["vllm:kv_cache_usage_perc" + LABEL] == 0


@pytest.mark.asyncio
async def test_inter_token_latency_spreads_chunks_over_time():
    with running_sim(itl_ms=50, ttft_ms=100) as sim:
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            arrivals = await _stream_chat(session, sim.url, max_tokens=5)

    first_token, last_token = arrivals[1], arrivals[5]
    assert first_token - started >= 0.09
    assert last_token - first_token >= 4 * 0.05 * 0.9
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[1:6])]
    assert min(gaps) >= 0.04


def test_ttft_is_applied_to_non_streaming_requests_too():
    with running_sim(ttft_ms=150, itl_ms=10) as sim:
        started = time.monotonic()
        status, _headers, _body = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=6))
        elapsed = time.monotonic() - started
        samples = metrics(sim.url)

    assert status == 200
    assert elapsed >= 0.15 + 5 * 0.01 * 0.9
    assert samples["vllm:time_to_first_token_seconds_sum" + LABEL] >= 0.15


def test_a_client_disconnect_mid_stream_stops_generation_and_frees_the_slot():
    with running_sim(itl_ms=50) as sim:
        parts = urlsplit(sim.url)
        body = json.dumps(chat_body(stream=True, max_tokens=200)).encode()
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            received = b""
            while received.count(b'"content":"') < 3:
                received += sock.recv(65536)
            assert metrics(sim.url)["vllm:num_requests_running" + LABEL] == 1

        eventually(lambda: metrics(sim.url)["vllm:num_requests_running" + LABEL] == 0, timeout=2, what="none running")
        samples = metrics(sim.url)

    assert samples['vllm:request_success_total{finished_reason="abort",model_name="inferia/sim-model"}'] == 1
    assert samples["vllm:generation_tokens_total" + LABEL] < 200


def test_health_and_inference_are_503_while_the_model_loads():
    with running_sim(startup_delay_s=0.5) as sim:
        loading_health, _headers, _body = request(sim.url, "GET", "/health")
        loading_chat, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=1))
        ready_health, _headers, ready_body = eventually(
            lambda: (answer := request(sim.url, "GET", "/health"))[0] == 200 and answer,
            timeout=2.0,
            interval=0.02,
            what="healthy once loaded",
        )
        ready_chat, _headers, _body2 = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=1))

    assert (loading_health, loading_chat) == (503, 503)
    assert json.loads(body)["error"]["code"] == 503
    assert (ready_health, ready_body, ready_chat) == (200, b"", 200)


@pytest.mark.parametrize("failure", [FailureType.HTTP_500, FailureType.HTTP_503])
def test_injected_http_failures_return_openai_shaped_errors(failure):
    with running_sim(failure_rate=1.0, failure_types=(failure,)) as sim:
        status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(stream=True, max_tokens=3))

    expected = 500 if failure is FailureType.HTTP_500 else 503
    assert status == expected
    assert json.loads(body)["error"]["code"] == expected


def test_an_injected_timeout_hangs_until_the_client_gives_up():
    with running_sim(failure_rate=1.0, failure_types=(FailureType.TIMEOUT,)) as sim:
        connection = connect(sim.url, timeout=0.3)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(max_tokens=3)))
        with pytest.raises(TimeoutError):
            connection.getresponse()
        connection.close()


def test_an_injected_disconnect_closes_the_connection_without_a_response():
    with running_sim(failure_rate=1.0, failure_types=(FailureType.DISCONNECT,)) as sim:
        connection = connect(sim.url)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(max_tokens=3)))
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
        connection.close()


def test_an_injected_midstream_failure_cuts_the_stream_after_some_tokens():
    with running_sim(failure_rate=1.0, failure_types=(FailureType.MIDSTREAM,)) as sim:
        connection = connect(sim.url)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(stream=True, max_tokens=20)))
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            response.read()
        connection.close()
        eventually(lambda: metrics(sim.url)["vllm:num_requests_running" + LABEL] == 0, timeout=2, what="none running")

    events = sse_events(cut.value.partial)
    assert "[DONE]" not in events
    assert 1 <= len(events) - 1 < 20  # the role chunk, then some but not all tokens


def test_an_injected_midstream_failure_truncates_a_non_streaming_body():
    with running_sim(failure_rate=1.0, failure_types=(FailureType.MIDSTREAM,)) as sim:
        connection = connect(sim.url)
        connection.request("POST", "/v1/chat/completions", body=json.dumps(chat_body(max_tokens=20)))
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        connection.close()


@pytest.mark.asyncio
async def test_it_serves_256_concurrent_streams():
    with running_sim(itl_ms=5, max_num_seqs=256) as sim:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            results = await asyncio.gather(*(_stream_chat(session, sim.url, max_tokens=20) for _ in range(256)))
        samples = await asyncio.to_thread(metrics, sim.url)

    assert all(len(arrivals) == 22 for arrivals in results)
    assert samples['vllm:request_success_total{finished_reason="length",model_name="inferia/sim-model"}'] == 256
    assert samples["vllm:num_requests_running" + LABEL] == 0
