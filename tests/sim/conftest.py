"""Fixtures and small HTTP helpers for the simulator's tests: a sim on a free port, SSE and metrics parsing."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from inferia_sim.testing import SimThread, running_sim


@pytest.fixture(scope="session", autouse=True)
def _flush_may_truncate_audit_tables() -> None:
    """Overrides the root conftest's database hook: these tests touch no database, and without the hook they also
    run where Django is not configured (`pytest tests/sim -p no:django`), as the simulator itself never imports it."""


@pytest.fixture
def sim() -> Iterator[SimThread]:
    """A simulator with default settings (zero delays)."""
    with running_sim() as started:
        yield started


def connect(url: str, timeout: float = 10.0) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)


def request(url: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    connection = connect(url)
    try:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"content-type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def post(url: str, path: str, body: Any) -> tuple[int, dict, bytes]:
    return request(url, "POST", path, body)


def sse_events(body: bytes) -> list[Any]:
    """The `data:` payloads of an SSE body, JSON-decoded except the final `[DONE]`."""
    events: list[Any] = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def metrics(url: str) -> dict[str, float]:
    """`/metrics` samples keyed by `name{labels}` (as printed), plus the bare name for the first sample of each."""
    status, _headers, body = request(url, "GET", "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        key, value = line.rsplit(" ", 1)
        samples[key] = float(value)
        samples.setdefault(key.split("{", 1)[0], float(value))
    return samples


def chat_body(**overrides: Any) -> dict[str, Any]:
    return {
        "model": "inferia/sim-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, simulator!"}],
        **overrides,
    }
