"""The gateway's pooled connections to engines: reused back to back, never past the keep-alive it is given (an
engine closes idle connections itself, and a request sent on one as it closes fails with nothing received)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from apps.gateway.engine_stream import EngineStreams, request_head
from apps.gateway.runtime import upstream_session


async def test_an_idle_connection_is_not_reused_past_the_keepalive(settings):
    settings.INFERIA_UPSTREAM_KEEPALIVE_SECONDS = 0.3
    client_ports: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        client_ports.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
    try:
        async with upstream_session() as http:
            for pause in (0, 0, 1.0):
                await asyncio.sleep(pause)
                async with http.post(url, json={}) as response:
                    assert response.status == 200
                    await response.read()
    finally:
        await runner.cleanup()
    first, again, after_idle = client_ports
    assert again == first  # back to back: the pooled connection
    assert after_idle != first  # idle past the keep-alive: a new one


async def _engine(handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"


async def _stream_once(
    streams: EngineStreams, url: str, *, idle_timeout_s: float = 5.0, before_streaming_s: float = 0.0
) -> tuple[int, bytes]:
    """One request through the fast relay's client: (status, body). `before_streaming_s`: how long the relay takes
    between the first byte and streaming (it answers the client's headers first)."""
    target = streams.target(url)
    assert target is not None
    body = b"{}"
    head = request_head(target, {"Content-Type": "application/json"}, body)
    connection = await streams.request(target, head, body, 5.0)
    await asyncio.sleep(before_streaming_s)
    received: list[bytes] = []
    first = connection.body_bytes()
    connection.body.clear()
    connection.stream(received.append, idle_timeout_s)
    received.insert(0, first)
    await connection.streamed(asyncio.sleep)
    streams.release(target, connection)
    return connection.status, b"".join(received)


async def test_the_fast_relays_connections_are_reused_then_dropped_past_the_keepalive():
    client_ports: list[int] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        client_ports.append(request.transport.get_extra_info("peername")[1])
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for index in range(3):
            await response.write(b"data: %d\n\n" % index)
        await response.write_eof()
        return response

    runner, url = await _engine(answer)
    streams = EngineStreams(keepalive_s=0.3)
    try:
        answers = []
        for pause in (0, 0, 1.0):
            await asyncio.sleep(pause)
            answers.append(await _stream_once(streams, url))
    finally:
        streams.close()
        await runner.cleanup()
    assert answers == [(200, b"data: 0\n\ndata: 1\n\ndata: 2\n\n")] * 3
    first, again, after_idle = client_ports
    assert again == first
    assert after_idle != first


async def test_a_request_on_a_kept_alive_connection_the_engine_drops_is_sent_again_on_a_new_one():
    """The engine closes an idle connection just as the next request arrives on it (its keep-alive ran out): the
    request got no answer byte, the engine never took it, so it goes again on a new connection, not to failover."""
    connections = 0

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        answered = 0
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if answered:  # a second request on this connection: dropped unanswered
                break
            answered += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 14\r\n\r\n")
            writer.write(b"data: [DONE]\n\n")
        writer.close()

    server = await asyncio.start_server(engine, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
    streams = EngineStreams(keepalive_s=30)
    try:
        first = await _stream_once(streams, url)
        second = await _stream_once(streams, url)
    finally:
        streams.close()
        server.close()
    assert first == second == (200, b"data: [DONE]\n\n")
    assert connections == 2  # the second request went again, on a new connection


async def test_an_answer_complete_before_it_streams_leaves_no_idle_timer_behind():
    """A short answer (or any answer from an engine at no delay) is often whole before the relay starts streaming it.
    Its idle timer must not be armed then: nothing would cancel it, one per request would live for the whole idle
    timeout, and when it fired on the kept-alive connection it failed the request then waiting for its first byte
    (which went again on a new connection: the engine did its work twice)."""
    client_ports: list[int] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        client_ports.append(request.transport.get_extra_info("peername")[1])
        if len(client_ports) == 2:
            await asyncio.sleep(0.6)  # a long prompt's prefill: the first byte comes after the idle timeout
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    runner, url = await _engine(answer)
    streams = EngineStreams(keepalive_s=30)
    try:
        first = await _stream_once(streams, url, idle_timeout_s=0.3, before_streaming_s=0.1)
        second = await _stream_once(streams, url, idle_timeout_s=0.3)
    finally:
        streams.close()
        await runner.cleanup()
    assert first == second == (200, b"data: [DONE]\n\n")
    assert len(client_ports) == 2  # each request reached the engine once
    assert client_ports[0] == client_ports[1]  # on the kept-alive connection


def test_a_header_that_could_split_the_request_is_refused():
    target = EngineStreams(keepalive_s=1).target("http://10.0.0.5:8000/v1/chat/completions")
    assert target is not None
    with pytest.raises(ValueError, match="line break"):
        request_head(target, {"X-Request-Id": "abc\r\nX-Evil: 1"}, b"{}")
    assert EngineStreams(keepalive_s=1).target("https://10.0.0.5/v1/chat/completions") is None
