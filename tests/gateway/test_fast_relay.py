"""The fast relay (bytes forwarded from the engine socket's callback) against the general one (aiohttp's reader,
per-event work, one ASGI message per read): for the same engine bytes, clients get the same bytes, whatever the reads'
boundaries, the usage event, a failure mid-stream or before the first byte; a client that leaves stops the engine
through either; and a deployment's stream interval never holds a chunk longer than its bound."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.gateway.conftest import METRICS_TOKEN, http, make_deployment, wait_until_served
from tests.gateway.stand_ins import RawEngine, raw_engine
from tests.kit.processes import TestProcess, web_start
from tests.kit.waiting import eventually

MODEL = "gw-other"
# How much later than its bound a chunk may reach the client: loopback, two event loops and a busy test machine.
LATE_S = 0.05


def _event(document: dict) -> bytes:
    return b"data: " + json.dumps({"id": "chatcmpl-raw", "created": 1, "model": MODEL, **document}).encode() + b"\n\n"


def _delta(text: str, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return _event({"object": "chat.completion.chunk", "choices": [choice]})


ROLE = _event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
COUNTS = {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}
USAGE = _event({"object": "chat.completion.chunk", "choices": [], "usage": COUNTS})
DONE = b"data: [DONE]\n\n"
# Reads that split events anywhere: mid-event, several events at once, the usage event over three reads.
SPLIT = [
    ROLE + _delta("Hel")[:20],
    _delta("Hel")[20:] + _delta("lo,") + _delta(" wor"),
    _delta("ld", "stop"),
    USAGE[:15],
    USAGE[15:40],
    USAGE[40:] + DONE,
]


@pytest.fixture(scope="module")
def general_gateway(test_database_url: str) -> Iterator[TestProcess]:
    """A web process that sends every stream through the general relay."""
    process = web_start(
        test_database_url,
        extra_env={"INFERIA_GATEWAY_FAST_RELAY": "false", "INFERIA_METRICS_TOKEN": METRICS_TOKEN},
    )
    yield process
    process.stop()


def _relayed(gateway: TestProcess, relay: str) -> float:
    _status, _headers, body = http(
        "GET", f"{gateway.url}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}
    )
    for line in body.decode().splitlines():
        if line.startswith(f'inferia_gateway_relayed_streams_total{{relay="{relay}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _both(
    tenant, gateway, general_gateway, body: dict, path: str = "/v1/chat/completions", headers: dict | None = None
) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """The same request through the fast relay and the general one: (status, body) of each, after checking which
    relay forwarded it."""
    answers = []
    for web, relay in ((gateway, "fast"), (general_gateway, "general")):
        wait_until_served(web, tenant.secret, MODEL)
        before = _relayed(web, relay)
        secret = None if headers else tenant.secret
        status, _headers, data = http("POST", f"{web.url}{path}", body=body, secret=secret, headers=headers)
        if status == 200:
            assert _relayed(web, relay) == before + 1, f"not forwarded by the {relay} relay"
        answers.append((status, data))
    return answers[0], answers[1]


def _chat(**fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, **fields}


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_same_engine_bytes_reach_the_client_byte_for_byte(tenant, gateway, general_gateway, include_usage):
    with raw_engine(SPLIT) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        body = _chat(stream_options={"include_usage": True}) if include_usage else _chat()
        fast, general = _both(tenant, gateway, general_gateway, body)
    assert fast == general
    status, data = fast
    assert status == 200
    expected = ROLE + _delta("Hel") + _delta("lo,") + _delta(" wor") + _delta("ld", "stop")
    assert data == expected + (USAGE if include_usage else b"") + DONE


def test_a_stream_the_engine_cuts_ends_with_the_same_error_event(tenant, gateway, general_gateway):
    with raw_engine([ROLE, _delta("par"), _delta("tial")[:30]], end="cut") as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        fast, general = _both(tenant, gateway, general_gateway, _chat())
    assert fast == general
    status, data = fast
    assert status == 200
    assert data.startswith(ROLE + _delta("par") + b"data: {")  # the half event is never sent
    error = json.loads(data.removeprefix(ROLE + _delta("par")).removeprefix(b"data: "))
    assert error["error"]["message"] == "The model's engine stopped in the middle of the answer."


def test_an_anthropic_messages_stream_is_translated_the_same_through_either_relay(tenant, gateway, general_gateway):
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"x-api-key": tenant.secret, "anthropic-version": "2023-06-01"}
    with raw_engine(SPLIT) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        fast, general = _both(tenant, gateway, general_gateway, body, "/v1/messages", headers)
    assert fast == general
    assert fast[0] == 200
    assert b"event: message_start" in fast[1]
    assert b'"text":"Hel"' in fast[1]
    assert b"event: message_stop" in fast[1]


def test_an_ollama_chat_stream_is_translated_the_same_through_either_relay(tenant, gateway, general_gateway):
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with raw_engine(SPLIT) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        fast, general = _both(tenant, gateway, general_gateway, body, "/ollama/api/chat")
    assert fast[0] == general[0] == 200
    # Ollama's lines carry the time they were written and the answer's durations: the rest is the same, line by line.
    volatile = {"created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}

    def lines(data: bytes) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k not in volatile} for line in data.splitlines()]

    assert lines(fast[1]) == lines(general[1])
    assert "".join(line["message"]["content"] for line in lines(fast[1])) == "Hello, world"
    assert lines(fast[1])[-1]["done"] is True


def test_an_openai_responses_stream_is_translated_the_same_through_either_relay(tenant, gateway, general_gateway):
    body = {"model": MODEL, "input": "hi", "stream": True, "store": False}
    with raw_engine(SPLIT) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        fast, general = _both(tenant, gateway, general_gateway, body, "/v1/responses")
    assert fast[0] == general[0] == 200

    def events(data: bytes) -> list[bytes]:
        # Each response has an id and a creation time of its own: the rest is the same, event by event.
        data = re.sub(rb'"(resp|msg)_[0-9a-zA-Z]+"', b'"ID"', data)
        return re.sub(rb'"created_at":\s?[0-9.]+', b'"created_at":0', data).split(b"\n\n")

    assert events(fast[1]) == events(general[1])
    assert b"event: response.output_text.delta" in fast[1]
    assert b'"output_text":"Hello, world"' in fast[1] or b'"text":"Hello, world"' in fast[1]
    assert b"event: response.completed" in fast[1]


@pytest.mark.parametrize("failure", ["refuse", "503"])
def test_failover_before_the_first_byte_gives_the_same_answer(tenant, gateway, general_gateway, failure):
    with raw_engine([], end=failure) as broken, raw_engine(SPLIT) as good:
        make_deployment(tenant.organization, MODEL, [broken.url, good.url])
        for _ in range(4):  # the router picks either replica first
            fast, general = _both(tenant, gateway, general_gateway, _chat())
            assert fast == general
            assert fast[0] == 200
        assert broken.requests >= 1  # failed over, not just lucky


def test_a_client_that_leaves_stops_the_engine_through_either_relay(tenant, gateway, general_gateway):
    writes = [ROLE, *(_delta(f" w{index}") for index in range(200))]
    with raw_engine(writes, pause_s=0.02) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        prefixes = []
        for web in (gateway, general_gateway):
            wait_until_served(web, tenant.secret, MODEL)
            gone = engine.gone
            prefixes.append(asyncio.run(_read_then_leave(web.url, tenant.secret, events=5)))
            eventually(lambda gone=gone: engine.gone == gone + 1, timeout=2, what="the engine to see the client leave")
    assert prefixes[0] == prefixes[1] == b"".join(writes[:5])


async def _read_then_leave(url: str, secret: str, *, events: int) -> bytes:
    async with aiohttp.ClientSession() as session:
        headers = {"authorization": f"Bearer {secret}"}
        async with session.post(f"{url}/v1/chat/completions", json=_chat(), headers=headers) as response:
            received = b""
            async for data in response.content.iter_any():
                received += data
                if received.count(b"\n\n") >= events:
                    break
    return b"\n\n".join(received.split(b"\n\n")[:events]) + b"\n\n"


def _timed_engine(count: int, pause_s: float) -> RawEngine:
    return RawEngine([ROLE, *(_delta(f" t{index}") for index in range(count)), DONE], pause_s=pause_s)


async def _arrivals(url: str, secret: str) -> list[tuple[float, int]]:
    """(when, events in it) of each read the client made."""
    reads = []
    async with aiohttp.ClientSession() as session:
        headers = {"authorization": f"Bearer {secret}"}
        async with session.post(f"{url}/v1/chat/completions", json=_chat(), headers=headers) as response:
            assert response.status == 200
            async for data in response.content.iter_any():
                reads.append((time.perf_counter(), data.count(b"data: ")))
    return reads


@pytest.mark.parametrize("relay", ["fast", "general"])
def test_a_stream_interval_coalesces_chunks_and_never_holds_one_past_its_bound(tenant, gateway, general_gateway, relay):
    web = gateway if relay == "fast" else general_gateway
    interval_s = 0.06
    engine = _timed_engine(30, pause_s=0.01)
    try:
        make_deployment(tenant.organization, MODEL, [engine.url], stream_interval_ms=int(interval_s * 1000))
        wait_until_served(web, tenant.secret, MODEL)
        reads = asyncio.run(_arrivals(web.url, tenant.secret))
    finally:
        engine.stop()
    assert sum(events for _at, events in reads) == 32
    # Coalesced: ~6 events per interval, not one read per event; the first token was not held.
    assert len(reads) <= 14, reads
    assert reads[1][0] - engine.sent_at[1] <= LATE_S
    # No event waited past the interval: the first event of each read (the one held longest) reached the client
    # within the interval of the engine sending it, give or take the loopback and the scheduler.
    first = 0
    for at, events in reads:
        assert at - engine.sent_at[first] <= interval_s + LATE_S, (first, at - engine.sent_at[first])
        first += events


def test_a_token_count_interval_sends_that_many_events_together(tenant, gateway):
    engine = _timed_engine(12, pause_s=0.02)
    try:
        make_deployment(tenant.organization, MODEL, [engine.url], stream_interval_chunks=4)
        wait_until_served(gateway, tenant.secret, MODEL)
        reads = asyncio.run(_arrivals(gateway.url, tenant.secret))
    finally:
        engine.stop()
    # The role event and the first token go at once (the time to first token is the engine's); then the other 11
    # tokens and [DONE] in groups of 4, each sent as its 4th came.
    assert [events for _at, events in reads] == [1, 1, 4, 4, 4]
    assert reads[1][0] - engine.sent_at[1] <= LATE_S
    for group, (at, _events) in enumerate(reads[2:]):
        assert at - engine.sent_at[5 + group * 4] <= LATE_S


def _slow_read(url: str, secret: str, body: dict, *, wait_s: float) -> bytes:
    """A client with a small receive buffer that reads nothing for `wait_s` after sending: the gateway's writes back
    up and it must stop reading the engine, then go on once the client reads."""
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((parts.hostname, parts.port))
    connection = HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.sock = sock
    payload = json.dumps(body).encode()
    connection.request(
        "POST",
        "/v1/chat/completions",
        payload,
        {"authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    time.sleep(wait_s)
    response = connection.getresponse()
    assert response.status == 200
    data = response.read()
    connection.close()
    return data


def test_a_client_that_falls_behind_gets_the_whole_stream_through_either_relay(tenant, gateway, general_gateway):
    writes = [ROLE, *(_delta(f"{index:04d}" + "x" * 20_000) for index in range(250)), DONE]  # about 5 MB
    with raw_engine(writes, pause_s=0) as engine:
        make_deployment(tenant.organization, MODEL, [engine.url])
        answers = []
        for web in (gateway, general_gateway):
            wait_until_served(web, tenant.secret, MODEL)
            answers.append(_slow_read(web.url, tenant.secret, _chat(), wait_s=1.0))
    assert answers[0] == answers[1] == b"".join(writes)
