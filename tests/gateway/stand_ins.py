"""Stand-ins the policy tests need around the gateway: an engine whose streamed answer the test writes chunk by
chunk (and which records what it received), and a TCP relay in front of Redis that a test can cut.

Both run on their own event loop in a thread of the test process; the gateway under test is another process and
reaches them over loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from tests.kit.ports import port_reserve


class _LoopThread:
    """An event loop running in a daemon thread, for servers the test drives from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class ScriptedEngine:
    """An OpenAI-compatible engine that answers every chat completion with `chunks` (one content delta each, a
    short pause between them so each reaches the gateway as its own read) and keeps the bodies and headers it
    received."""

    def __init__(self, chunks: list[str], *, pause_s: float = 0.02) -> None:
        self.chunks = chunks
        self.pause_s = pause_s
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.tokenize_requests = 0
        self.port = port_reserve()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = _LoopThread()
        self._runner: web.AppRunner | None = None
        self._loop.run(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", self._health)
        app.router.add_post("/tokenize", self._no_tokenize)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _no_tokenize(self, request: web.Request) -> web.Response:
        """Like most OpenAI-compatible servers, it cannot count tokens: 404, counted."""
        self.tokenize_requests += 1
        return web.json_response({"detail": "Not Found"}, status=404)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        self.headers.append(dict(request.headers))
        prompt_tokens, completion_tokens = 10, len(self.chunks)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        head = {"id": "chatcmpl-scripted", "created": 1, "model": body["model"]}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(self.chunks)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response({**head, "object": "chat.completion", "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)

        async def event(document: dict[str, Any]) -> None:
            payload = json.dumps({**head, "object": "chat.completion.chunk", **document}).encode()
            await response.write(b"data: " + payload + b"\n\n")

        await event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
        for text in self.chunks:
            await asyncio.sleep(self.pause_s)
            await event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        await event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await event({"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def stop(self) -> None:
        if self._runner is not None:
            self._loop.run(self._runner.cleanup())
        self._loop.stop()


@contextlib.contextmanager
def scripted_engine(chunks: list[str]) -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine(chunks)
    try:
        yield engine
    finally:
        engine.stop()


class TcpRelay:
    """Forwards a local port to `host:port` (Redis) until `cut()`, which closes every relayed connection and stops
    accepting; `restore()` accepts again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = port_reserve()
        self._loop = _LoopThread()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.restore()

    def restore(self) -> None:
        self._loop.run(self._listen())

    def cut(self) -> None:
        self._loop.run(self._cut())

    def stop(self) -> None:
        self.cut()
        self._loop.stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


class RawEngine:
    """An engine whose streamed answer is exact bytes: every POST is answered `200 text/event-stream` with each of
    `writes` as one HTTP chunk, `pause_s` apart, so a test decides where reads split events. `end` says how the
    answer ends: "done" (the last chunk, the connection kept alive), "cut" (the connection closed mid-body),
    "refuse" (closed before any answer byte) or "503" (an error answer). It counts the requests it got, and when
    clients went away in the middle of an answer (`gone`)."""

    def __init__(self, writes: list[bytes], *, end: str = "done", pause_s: float = 0.005) -> None:
        self.writes = writes
        self.end = end
        self.pause_s = pause_s
        self.requests = 0
        self.gone = 0
        self.sent_at: list[float] = []  # when each write of the last answer went out (time.perf_counter)
        self.port = port_reserve()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = _LoopThread()
        self._server: asyncio.Server | None = None
        self._loop.run(self._start())

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if head.startswith(b"GET /health"):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    continue
                self.requests += 1
                if not await self._answer(writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter) -> bool:
        """Write one answer; False when the connection must close after it."""
        if self.end == "refuse":
            return False
        if self.end == "503":
            body = b'{"error":{"message":"overloaded","type":"server_error","code":null}}'
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.sent_at = []
        for data in self.writes:
            writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            self.sent_at.append(time.perf_counter())
            try:
                await writer.drain()
                await asyncio.sleep(self.pause_s)
                if writer.transport.is_closing():
                    raise ConnectionResetError
            except ConnectionError:
                self.gone += 1
                return False
        if self.end == "cut":
            return False
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    def stop(self) -> None:
        self._loop.run(self._close())
        self._loop.stop()


@contextlib.contextmanager
def raw_engine(writes: list[bytes], **options: Any) -> Iterator[RawEngine]:
    engine = RawEngine(writes, **options)
    try:
        yield engine
    finally:
        engine.stop()
