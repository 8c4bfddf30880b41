"""A lean load generator for OpenAI-compatible streaming chat completions (or, with `--endpoint messages`,
`responses` or `ollama`, the same requests through Anthropic's `/v1/messages`, OpenAI's `/v1/responses` or Ollama's
`/ollama/api/chat`).

N workers each hold one keep-alive HTTP/1.1 connection (raw asyncio + httptools, under uvloop when run as a
script) and send `POST /v1/chat/completions` with `stream: true` back to back. Per request it records the time to
the first content chunk, the total latency and whether the stream completed. It is deliberately minimal: an
httpx-based client spent a whole core and dominated the numbers it was meant to measure.

Use it in-process (`await run_load(...)`) or as a subprocess, so the measured server gets its own cores:

    python tests/bench/loadgen.py --url http://127.0.0.1:8000 --concurrency 64 --requests 5000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

DEFAULT_PROMPT = "Write a short note about load testing an inference gateway."
# The first chunk that carries generated text: a non-empty `content` (chat) or `text` (completions) string.
# (a Responses text delta is a `delta` string; a chat chunk's `delta` is an object).
_CONTENT_RE = re.compile(rb'"(?:content|text|delta)":"(?:[^"\\]|\\.)')
_USAGE_RE = re.compile(rb'"(?:completion_tokens|output_tokens|eval_count)":\s*(\d+)')
_STREAM_ERRORS = (b'data: {"error"', b"event: error", b'{"error"', b'"response.failed"')
# How each protocol's stream ends; the Responses and Ollama final events carry more after their marker.
_DONES = (b"data: [DONE]", b'"message_stop"', b'"response.completed"', b'"response.incomplete"', b'"done":true')
_DONE_WINDOW = 4096
ENDPOINTS = {"chat": "/chat/completions", "messages": "/messages", "responses": "/responses", "ollama": "/api/chat"}
MAX_ERROR_SAMPLES = 5


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class LoadResult:
    """What one load run measured; latencies in seconds, successful requests only."""

    concurrency: int
    requests: int = 0
    ok: int = 0
    errors: int = 0
    duration_s: float = 0.0
    completion_tokens: int = 0
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.duration_s if self.duration_s else 0.0

    def ttft_p50(self) -> float:
        return percentile(self.ttft_s, 50)

    def ttft_p99(self) -> float:
        return percentile(self.ttft_s, 99)

    def latency_p50(self) -> float:
        return percentile(self.latency_s, 50)

    def latency_p99(self) -> float:
        return percentile(self.latency_s, 99)

    def record_error(self, message: str) -> None:
        self.errors += 1
        if len(self.error_samples) < MAX_ERROR_SAMPLES:
            self.error_samples.append(message)

    def summary(self) -> dict[str, Any]:
        """The aggregate figures (no per-request lists), as printed by `--json`."""
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 4),
            "requests_per_s": round(self.requests_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "completion_tokens": self.completion_tokens,
            "ttft_p50_ms": round(self.ttft_p50() * 1000, 3),
            "ttft_p99_ms": round(self.ttft_p99() * 1000, 3),
            "latency_p50_ms": round(self.latency_p50() * 1000, 3),
            "latency_p99_ms": round(self.latency_p99() * 1000, 3),
            "error_samples": self.error_samples,
        }


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    path: str
    ssl: ssl.SSLContext | None
    endpoint: str = "chat"


def _target(url: str, endpoint: str = "chat") -> _Target:
    """Where to send: `url` is a base URL (`http://h:p` or `.../v1`) or the endpoint's full URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    path = parts.path.rstrip("/")
    suffix = ENDPOINTS[endpoint]
    if endpoint == "ollama":
        path = "/ollama" + suffix  # Ollama's API is beside /v1, not under it
    elif not path.endswith(suffix):
        path += suffix if path.endswith("/v1") else "/v1" + suffix
    https = parts.scheme == "https"
    context = ssl.create_default_context() if https else None
    return _Target(parts.hostname, parts.port or (443 if https else 80), path, context, endpoint)


def _request_bytes(target: _Target, *, model: str, api_key: str | None, max_tokens: int, prompt: str) -> bytes:
    messages = [{"role": "user", "content": prompt}]
    document: dict[str, Any] = {"model": model, "messages": messages, "stream": True, "max_tokens": max_tokens}
    if target.endpoint == "chat":
        document["stream_options"] = {"include_usage": True}
    elif target.endpoint == "responses":
        document = {"model": model, "input": prompt, "stream": True, "max_output_tokens": max_tokens}
    elif target.endpoint == "ollama":
        document = {"model": model, "messages": messages, "stream": True, "options": {"num_predict": max_tokens}}
    body = json.dumps(document).encode()
    headers = [
        f"POST {target.path} HTTP/1.1",
        f"host: {target.host}:{target.port}",
        "content-type: application/json",
        "accept: text/event-stream",
        f"content-length: {len(body)}",
    ]
    if api_key:
        headers.append(f"authorization: Bearer {api_key}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


class _Outcome:
    __slots__ = ("completion_tokens", "error", "first_content_at")

    def __init__(self) -> None:
        self.first_content_at = 0.0
        self.completion_tokens = 0
        self.error = ""


class _StreamConnection(asyncio.Protocol):
    """One keep-alive connection; `send` writes a request and resolves when its response is complete."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self._waiter: asyncio.Future[_Outcome] | None = None
        self._outcome = _Outcome()
        self._status = 0
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.reusable = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._fail(f"connection closed: {exc}" if exc else "connection closed by server")

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP response: {exc}")
            if self.transport is not None:
                self.transport.close()

    def send(self, request: bytes) -> asyncio.Future[_Outcome]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._outcome = _Outcome()
        self._status = 0
        self._body = []
        self.transport.write(request)
        return self._waiter

    def _fail(self, message: str) -> None:
        self.reusable = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            self._outcome.error = message
            waiter.set_result(self._outcome)

    # httptools callbacks

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        # A pattern split across two reads is found one read late; that costs microseconds of TTFT accuracy.
        if not self._outcome.first_content_at and self._status == 200 and _CONTENT_RE.search(body):
            self._outcome.first_content_at = time.perf_counter()

    def on_message_complete(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        self.reusable = self._parser.should_keep_alive()
        outcome = self._outcome
        body = b"".join(self._body)
        if self._status != 200:
            outcome.error = f"HTTP {self._status}: {body[:200].decode(errors='replace')}"
        elif any(marker in body for marker in _STREAM_ERRORS):
            start = min(body.find(marker) for marker in _STREAM_ERRORS if marker in body)
            outcome.error = "stream error: " + body[start : start + 200].decode(errors="replace")
        elif not any(done in body[-_DONE_WINDOW:] for done in _DONES):
            outcome.error = "stream ended without its final event"
        else:
            usage = _USAGE_RE.findall(body[-_DONE_WINDOW:])
            outcome.completion_tokens = int(usage[-1]) if usage else 0
        waiter.set_result(outcome)


class _Budget:
    """Requests left to hand out to workers."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


async def _connect(target: _Target) -> _StreamConnection:
    loop = asyncio.get_running_loop()
    _transport, connection = await loop.create_connection(
        _StreamConnection, target.host, target.port, ssl=target.ssl, server_hostname=target.host if target.ssl else None
    )
    return connection


async def _worker(
    target: _Target, request: bytes, budget: _Budget, result: LoadResult | None, timeout_s: float
) -> None:
    connection: _StreamConnection | None = None
    while budget.take():
        started = time.perf_counter()
        try:
            if connection is None or not connection.reusable:
                if connection is not None and connection.transport is not None:
                    connection.transport.close()
                connection = await _connect(target)
                started = time.perf_counter()  # connection set-up is not part of the request's latency
            async with asyncio.timeout(timeout_s):
                outcome = await connection.send(request)
        except (OSError, TimeoutError) as exc:
            if connection is not None and connection.transport is not None:
                connection.transport.close()
            connection = None
            if result is not None:
                result.requests += 1
                result.record_error(f"{type(exc).__name__}: {exc}")
            continue
        if result is None:
            continue
        result.requests += 1
        if outcome.error:
            result.record_error(outcome.error)
            continue
        finished = time.perf_counter()
        result.ok += 1
        result.completion_tokens += outcome.completion_tokens
        result.latency_s.append(finished - started)
        result.ttft_s.append((outcome.first_content_at or finished) - started)
    if connection is not None and connection.transport is not None:
        connection.transport.close()


async def run_load(
    url: str,
    *,
    concurrency: int,
    requests: int,
    model: str,
    api_key: str | None,
    max_tokens: int = 64,
    warmup: int | None = None,
    prompt: str = DEFAULT_PROMPT,
    timeout_s: float = 60.0,
    endpoint: str = "chat",
) -> LoadResult:
    """Send `requests` streaming chat completions over `concurrency` keep-alive connections and measure them.

    `warmup` requests (default: one per worker, which also opens the connections) run first and are not counted.
    """
    target = _target(url, endpoint)
    request = _request_bytes(target, model=model, api_key=api_key, max_tokens=max_tokens, prompt=prompt)
    warmup = concurrency if warmup is None else warmup
    if warmup:
        budget = _Budget(warmup)
        await asyncio.gather(*(_worker(target, request, budget, None, timeout_s) for _ in range(concurrency)))
    result = LoadResult(concurrency=concurrency)
    budget = _Budget(requests)
    started = time.perf_counter()
    await asyncio.gather(*(_worker(target, request, budget, result, timeout_s) for _ in range(concurrency)))
    result.duration_s = time.perf_counter() - started
    return result


def _run(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Streaming chat-completions load generator.")
    parser.add_argument("--url", required=True, help="base URL (http://host:port or .../v1) or the full endpoint")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--model", default="inferia/sim-model")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=None, help="uncounted requests first (default: concurrency)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument(
        "--endpoint", choices=sorted(ENDPOINTS), default="chat", help="which API the same requests go through"
    )
    args = parser.parse_args(argv)
    result: LoadResult = _run(
        run_load(
            args.url,
            concurrency=args.concurrency,
            requests=args.requests,
            model=args.model,
            api_key=args.api_key,
            max_tokens=args.max_tokens,
            warmup=args.warmup,
            timeout_s=args.timeout,
            endpoint=args.endpoint,
        )
    )
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>18}: {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
