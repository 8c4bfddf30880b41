"""The request path's pipelined Redis connection: every call gets its own replies, whatever the others do, and a
lost, stalled or demoted Redis costs a call one retry or one timeout, never a wrong reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
import redis
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.test import override_settings

from inferia_runtime.redis_clients import GatewayRedis, gateway_redis_options
from inferia_runtime.redis_pipe import PipeScript, RedisPipe, resp_command
from tests.kit.redis_server import RedisServer

T = TypeVar("T")
TIMEOUT_S = 0.3


def echo(text: str) -> bytes:
    return resp_command(b"ECHO", text)


async def with_pipe(url: str, body: Callable[[RedisPipe, GatewayRedis], Awaitable[T]]) -> T:
    """What `body` returns, given a pipe (and its client) to the Redis at `url`, both closed after."""
    client = GatewayRedis.from_url(url, **gateway_redis_options())
    pipe = RedisPipe(client)
    try:
        return await body(pipe, client)
    finally:
        pipe.close()
        await client.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


def test_it_writes_commands_in_redis_wire_format():
    assert resp_command(b"XADD", "usage", b"*", "e", 42) == (
        b"*5\r\n$4\r\nXADD\r\n$5\r\nusage\r\n$1\r\n*\r\n$1\r\ne\r\n$2\r\n42\r\n"
    )
    assert resp_command("ECHO", "é\r\n") == b"*2\r\n$4\r\nECHO\r\n$4\r\n\xc3\xa9\r\n\r\n"


def test_concurrent_calls_each_get_their_own_replies(redis_cache):
    async def body(pipe: RedisPipe, _client: GatewayRedis) -> list[list[object]]:
        singles = [pipe.execute(echo(f"call-{number}")) for number in range(300)]
        pairs = [pipe.execute(echo(f"a-{n}") + resp_command(b"INCR", b"pipe-count"), replies=2) for n in range(50)]
        return await asyncio.gather(*singles, *pairs)

    answers = asyncio.run(with_pipe(settings.CACHE_REDIS_URL, body))
    assert answers[:300] == [[f"call-{number}".encode()] for number in range(300)]
    assert [pair[0] for pair in answers[300:]] == [f"a-{n}".encode() for n in range(50)]
    assert sorted(pair[1] for pair in answers[300:]) == list(range(1, 51))  # type: ignore[type-var]


def test_the_calls_of_one_loop_iteration_reach_redis_in_one_write(own_redis):
    """An engine's step ends many streams at once: their appends go out together, and Redis (whose every wake-up
    costs its sender) reads them at once."""
    admin = redis.Redis(port=own_redis.port, socket_timeout=1)

    def reads() -> int:
        return int(admin.info("stats")["total_reads_processed"])

    async def body(pipe: RedisPipe, _client: GatewayRedis) -> int:
        await pipe.execute(echo("connected"))
        before = reads()
        await asyncio.gather(*(pipe.execute(resp_command(b"INCR", b"together")) for _ in range(200)))
        return reads() - before - 1  # not the INFO that counts them

    try:
        assert asyncio.run(with_pipe(own_redis.url(0), body)) == 1
    finally:
        admin.close()


def test_an_error_reply_is_raised_to_its_call_alone(redis_cache):
    redis_cache.set("pipe-text", "not a number")

    async def body(pipe: RedisPipe, _client: GatewayRedis) -> tuple[object, ...]:
        return tuple(
            await asyncio.gather(
                pipe.execute(echo("before")),
                pipe.execute(resp_command(b"INCR", b"pipe-text")),
                pipe.execute(echo("after")),
                return_exceptions=True,
            )
        )

    before, error, after = asyncio.run(with_pipe(settings.CACHE_REDIS_URL, body))
    assert (before, after) == ([b"before"], [b"after"])
    assert isinstance(error, redis.ResponseError)
    assert "not an integer" in str(error)


def test_a_cancelled_call_leaves_the_others_their_replies(redis_cache):
    async def body(pipe: RedisPipe, _client: GatewayRedis) -> list[object]:
        await pipe.execute(echo("connected"))
        calls = [asyncio.ensure_future(pipe.execute(echo(f"call-{n}"))) for n in range(3)]
        await asyncio.sleep(0)  # each has written its command
        calls[1].cancel()
        answers = await asyncio.gather(*calls, return_exceptions=True)
        answers.append(await pipe.execute(echo("next")))
        return answers

    first, cancelled, third, following = asyncio.run(with_pipe(settings.CACHE_REDIS_URL, body))
    assert (first, third, following) == ([b"call-0"], [b"call-2"], [b"next"])
    assert isinstance(cancelled, asyncio.CancelledError)


def test_a_connection_redis_closed_is_replaced_at_the_next_call(redis_cache):
    async def body(pipe: RedisPipe, _client: GatewayRedis) -> tuple[int, int, list[object]]:
        (first_id,) = await pipe.execute(resp_command(b"CLIENT", b"ID"))
        redis_cache.client_kill_filter(_id=first_id)
        (second_id,) = await pipe.execute(resp_command(b"CLIENT", b"ID"))  # retried on a new connection
        return first_id, second_id, await pipe.execute(echo("served"))

    first_id, second_id, served = asyncio.run(with_pipe(settings.CACHE_REDIS_URL, body))
    assert second_id != first_id
    assert served == [b"served"]


def test_a_script_redis_does_not_know_is_sent_whole_and_its_errors_are_raised(redis_cache):
    joined = PipeScript("return ARGV[1] .. KEYS[1]")
    failing = PipeScript("return redis.error_reply('over the limit')")

    async def body(pipe: RedisPipe, _client: GatewayRedis) -> tuple[object, ...]:
        redis_cache.script_flush()  # as after a restart or a failover
        first = await joined.run(pipe, ["key"], ["value-"])
        known = redis_cache.script_exists(joined.sha.decode())
        second = await joined.run(pipe, ["key"], [7])
        with pytest.raises(redis.ResponseError, match="over the limit"):
            await failing.run(pipe, [], [])
        return first, known, second

    first, known, second = asyncio.run(with_pipe(settings.CACHE_REDIS_URL, body))
    assert (first, known, second) == (b"value-key", [True], b"7key")


@override_settings(INFERIA_REDIS_TIMEOUT_SECONDS=TIMEOUT_S)
def test_a_stalled_redis_costs_one_timeout_then_the_pipe_and_its_client_fail_fast(own_redis):
    url = own_redis.url(0)

    async def body(pipe: RedisPipe, client: GatewayRedis) -> list[tuple[str, float]]:
        await pipe.execute(echo("connected"))
        own_redis.freeze()
        outcomes = []
        try:
            for call in (pipe.execute(echo("stalled")), pipe.execute(echo("again")), client.ping()):
                started = time.monotonic()
                with pytest.raises(redis.RedisError) as raised:
                    await call
                outcomes.append((type(raised.value).__name__, time.monotonic() - started))
        finally:
            own_redis.thaw()
        await asyncio.sleep(TIMEOUT_S)
        assert await pipe.execute(echo("back")) == [b"back"]  # a new connection: the stalled one was dropped
        return outcomes

    (first, first_s), (second, second_s), (client_call, client_s) = asyncio.run(with_pipe(url, body))
    assert first == "TimeoutError"
    assert TIMEOUT_S * 0.9 <= first_s < TIMEOUT_S + 0.5
    assert (second, client_call) == ("ConnectionError", "ConnectionError")
    assert max(second_s, client_s) < 0.05  # without waiting on Redis again


# The web server's loop, and the standard one (Daphne's, and any asyncio.run): they order timers and I/O differently.
LOOPS = pytest.mark.parametrize("run", [uvloop.run, asyncio.run], ids=["uvloop", "asyncio"])
# A command Redis answers (with nil) 50 ms after its write, well within the timeout: a blocking pop of an empty list,
# with its own timeout. Late enough that a loop busy right after the write is surely busy when the reply comes.
ANSWERED_IN_50_MS = resp_command(b"BLPOP", b"never-filled", b"0.05")


def _busy_for(seconds: float) -> None:
    """The loop kept busy, as by a burst of requests, a long collection of garbage or a throttled CPU."""
    time.sleep(seconds)


def _more_work(loop: asyncio.AbstractEventLoop, callbacks: int) -> None:
    """Callbacks queued one after another (other streams' chunks): the loop polls for I/O without waiting."""
    _busy_for(0.0002)
    if callbacks:
        loop.call_soon(_more_work, loop, callbacks - 1)


@LOOPS
@override_settings(INFERIA_REDIS_TIMEOUT_SECONDS=TIMEOUT_S)
def test_a_loop_busy_past_the_timeout_before_the_write_does_not_count_against_redis(redis_cache, run):
    """The timeout is Redis' time to answer: a call whose command waited behind other callbacks for longer than the
    timeout before it was written gets its reply, and the calls after it are not failed as if Redis had stalled."""

    async def body(pipe: RedisPipe, client: GatewayRedis) -> tuple[object, object, object]:
        await pipe.execute(echo("connected"))
        loop = asyncio.get_running_loop()
        loop.call_soon(_busy_for, TIMEOUT_S * 1.5)  # runs before the call's write
        loop.call_soon(_more_work, loop, 100)
        late = await pipe.execute(ANSWERED_IN_50_MS)
        return late, await pipe.execute(echo("next")), await client.ping()

    assert run(with_pipe(settings.CACHE_REDIS_URL, body)) == ([None], [b"next"], True)


class _Stalling(asyncio.Protocol):
    """A connection whose every read keeps the loop busy past the timeout (a large request parsed at once)."""

    def data_received(self, data: bytes) -> None:
        _busy_for(TIMEOUT_S * 1.5)


@LOOPS
@override_settings(INFERIA_REDIS_TIMEOUT_SECONDS=TIMEOUT_S)
def test_a_reply_that_came_while_the_loop_was_busy_is_read_before_the_call_times_out(redis_cache, run):
    """Redis answered in time, but the loop was busy in another connection's read until after the deadline: the
    reply waiting in the socket is read, not dropped with the connection."""

    async def body(pipe: RedisPipe, client: GatewayRedis) -> tuple[object, object]:
        loop = asyncio.get_running_loop()
        await pipe.execute(echo("connected"))
        server = await loop.create_server(_Stalling, "127.0.0.1", 0)
        _, sender = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        try:
            call = asyncio.ensure_future(pipe.execute(ANSWERED_IN_50_MS))
            await asyncio.sleep(0)  # the call has queued its write
            loop.call_soon(sender.transport.write, b"x")  # after the write: the stalling read comes next
            return await call, await client.ping()
        finally:
            sender.close()
            server.close()

    assert run(with_pipe(settings.CACHE_REDIS_URL, body)) == ([None], True)


def test_a_master_demoted_to_a_replica_is_left_for_a_new_connection(own_redis):
    admin = redis.Redis(port=own_redis.port, socket_timeout=1)
    spare = RedisServer()

    async def body(pipe: RedisPipe, _client: GatewayRedis) -> list[object]:
        await pipe.execute(resp_command(b"SET", b"k", b"1"))
        admin.replicaof("127.0.0.1", spare.port)  # as Sentinel does to a master it failed over
        with pytest.raises(redis.ConnectionError, match="READONLY"):
            await pipe.execute(resp_command(b"SET", b"k", b"2"))
        admin.replicaof("NO", "ONE")  # a master again (as the new master Sentinel names would be)
        return await pipe.execute(resp_command(b"SET", b"k", b"3"))

    try:
        assert asyncio.run(with_pipe(own_redis.url(0), body)) == [b"OK"]
    finally:
        spare.stop()
        admin.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    certificate_path, key_path = directory / "redis.crt", directory / "redis.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificate_path, key_path


def test_it_speaks_to_a_redis_over_tls(tmp_path):
    """`rediss://` URLs: redis-py makes the TLS connection, the pipe writes and reads through it."""
    server = RedisServer(tls=_self_signed(tmp_path))

    async def body(pipe: RedisPipe, _client: GatewayRedis) -> list[list[object]]:
        return await asyncio.gather(pipe.execute(echo("a")), pipe.execute(echo("b" * 100_000)))

    try:
        assert asyncio.run(with_pipe(server.url(0), body)) == [[b"a"], [b"b" * 100_000]]
    finally:
        server.stop()
