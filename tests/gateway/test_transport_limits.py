"""The web process as `inferia start web` runs it (uvicorn and daphne), against clients that misbehave on the wire:
headers past INFERIA_MAX_HEADER_BYTES get 431 without being buffered, headers or a body that stop arriving get 408
and a closed connection, and connections past INFERIA_MAX_CONNECTIONS get 503. Raw sockets throughout."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from inferia_cli.processes import endpoints_from_env, web_spec
from tests.kit.ports import port_reserve
from tests.kit.processes import TestProcess

MAX_HEADER_BYTES = 4096
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MAX_CONNECTIONS = 20
MARGIN_S = 1.0
LIMITS_ENV = {
    "INFERIA_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "INFERIA_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
    "INFERIA_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_S),
    "INFERIA_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    # The connection limit is each worker's: one worker, so that all the test's connections meet the same limit.
    "INFERIA_WEB_WORKERS": "1",
}


def inferia_web(database_url: str, server: str, extra_env: dict[str, str]) -> TestProcess:
    """The web process exactly as `inferia start web` starts it."""
    port = port_reserve()
    env = {**os.environ, "DATABASE_URL": database_url, "INFERIA_SERVER": server, "INFERIA_PORT": str(port)}
    env.update(extra_env)
    with mock.patch.dict(os.environ, env, clear=True):
        spec = web_spec(endpoints_from_env())
    process = TestProcess(list(spec.argv), env={**env, **spec.env}, port=port, name=f"web-{server}")
    process.wait_http(process.url + "/healthz", timeout=60)
    return process


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def web(request, test_database_url: str) -> Iterator[TestProcess]:
    process = inferia_web(test_database_url, request.param, LIMITS_ENV)
    yield process
    process.stop()


def connect(web: TestProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", web.port), timeout=10)


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection (a reset counts as a close)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def request_head(path: str, authorization: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: %s\r\n%s\r\n" % (path.encode(), authorization, extra)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/deployments/"])
def test_headers_within_the_limit_are_served_and_past_it_get_431(transactional_db, web, path):
    with connect(web) as sock:
        sock.sendall(request_head(path, b"Bearer sk-inf-" + b"a" * 100, b"Content-Length: 0\r\nConnection: close\r\n"))
        assert status_of(read_all(sock)) == 401  # the application's answer: nothing in the way

    with connect(web) as sock:
        big = b"Bearer sk-inf-" + b"a" * MAX_HEADER_BYTES
        sock.sendall(request_head(path, big, b"Content-Length: 0\r\n"))
        response = read_all(sock)
    assert status_of(response) == 431
    assert b'"error"' in response


def test_huge_headers_are_refused_without_being_buffered(transactional_db, web):
    before = rss_kib(web.pid)
    pushed = []
    for _ in range(4):
        with connect(web) as sock:
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ")
            sent = 0
            chunk = b"a" * 65536
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server hung up: as it should
                while sent < 50 * 1024 * 1024:
                    sock.sendall(chunk)
                    sent += len(chunk)
            pushed.append(sent)
            response = read_all(sock)
        assert response == b"" or status_of(response) == 431
    grown_kib = rss_kib(web.pid) - before
    print(f"{web.popen.args[2]}: pushed {[n // 1024 for n in pushed]} KiB; RSS grew {grown_kib} KiB")
    assert max(pushed) < 16 * 1024 * 1024, "the server kept reading a header far past the limit"
    assert grown_kib < 20 * 1024


def test_half_sent_headers_are_cut_off_after_the_header_timeout(transactional_db, web):
    with connect(web) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        response = read_all(sock)
        held = time.monotonic() - started
    print(f"{web.popen.args[2]}: half-sent headers held {held:.2f}s")
    assert HEADER_TIMEOUT_S - 0.1 <= held <= HEADER_TIMEOUT_S + MARGIN_S
    assert status_of(response) == 408


def test_headers_dripped_a_byte_at_a_time_do_not_extend_the_deadline(transactional_db, web):
    with connect(web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < HEADER_TIMEOUT_S + MARGIN_S + 1:
            try:
                sock.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
        held = time.monotonic() - started
    assert closed, "a client dripping headers kept its connection"
    assert held <= HEADER_TIMEOUT_S + MARGIN_S


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/keys/"])
def test_a_stalled_body_is_cut_off_and_a_slow_steady_one_is_not(transactional_db, web, path):
    with connect(web) as sock:
        sock.sendall(request_head(path, b"Bearer sk-inf-unknown", b"Content-Length: 100\r\n") + b'{"model": ')
        started = time.monotonic()
        response = read_all(sock)
        held = time.monotonic() - started
    print(f"{web.popen.args[2]} {path}: stalled body held {held:.2f}s")
    assert held <= BODY_TIMEOUT_S + MARGIN_S
    assert response == b"" or status_of(response) == 408

    body = b'{"model": "x", "messages": []}'
    with connect(web) as sock:
        sock.sendall(request_head(path, b"Bearer sk-inf-unknown", b"Content-Length: %d\r\n" % len(body)))
        for piece in (body[:10], body[10:20], body[20:]):  # over twice the timeout in all, never silent that long
            time.sleep(BODY_TIMEOUT_S * 0.7)
            sock.sendall(piece)
        assert status_of(sock.recv(65536)) == 401


def test_connections_past_the_limit_get_503_and_the_rest_are_served(transactional_db, web):
    sockets = [connect(web) for _ in range(MAX_CONNECTIONS + 5)]
    try:
        # Until the 5 past the limit are answered, well within the header timeout (only the refused ones have an
        # answer before it): a busy machine may take a while to accept them all.
        deadline = time.monotonic() + HEADER_TIMEOUT_S * 0.8
        readable: list[socket.socket] = []
        while len(readable) < 5 and time.monotonic() < deadline:
            readable = select.select(sockets, [], [], 0.05)[0]
        refused = [sock.recv(65536) for sock in readable]
        assert len(refused) >= 5
        assert {status_of(data) for data in refused} == {503}
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.3)
    with connect(web) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert status_of(read_all(sock)) == 200


def test_websocket_hand_offs_give_their_connection_back(transactional_db, web):
    """Upgraded connections leave the HTTP protocol: once they close they must not count against the limit."""
    handshake = (
        b"GET /ws/console/deployments/1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    for _ in range(MAX_CONNECTIONS + 5):
        with connect(web) as sock:
            sock.sendall(handshake)
            assert sock.recv(65536).startswith(b"HTTP/1.1 ")
    time.sleep(0.3)
    sockets = [connect(web) for _ in range(MAX_CONNECTIONS - 2)]
    try:
        time.sleep(0.3)
        assert select.select(sockets, [], [], 0)[0] == []  # no 503 for any of them
        with connect(web) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert status_of(read_all(sock)) == 200
    finally:
        for sock in sockets:
            sock.close()
