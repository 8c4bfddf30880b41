"""One Redis connection that the request path's frequent writes share (usage appends, the limits' scripts),
pipelined: each call writes its commands and waits for their replies, in order, with no pooled connection to check
out, no timeout context and no task woken per read.

Through redis-py's asyncio client one XADD costs about 77 µs of web CPU (measured under uvloop: the pool's checkout
and return, two timeout contexts, the stream reader's wake-ups); on this connection about 20 µs. The connection is
still made by redis-py, from the same pool settings as the request path's client (URL forms, Sentinel, TLS, AUTH,
SELECT); once it is up, this protocol takes over its socket and hiredis parses the replies.

Only for commands that do not block the connection (everything queued behind a slow command waits for it). A lost
connection's calls are tried once more on a fresh one, as the request path's client does (`gateway_redis_options`):
a command Redis ran just before the connection broke runs twice, which an append shrugs off (its event is stored
once per request id) and a limit counts once more (as it would through the client).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import math
from typing import Any

import hiredis
import redis
from django.conf import settings

from inferia_runtime.redis_clients import GatewayRedis


def resp_command(*args: bytes | str | int) -> bytes:
    """One command in Redis' wire format (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        value = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class _Waiter:
    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int) -> None:
        self.future = future
        self.replies: list[Any] = []
        self.expected = expected
        self.deadline = math.inf  # set when its command is written


class _PipeProtocol(asyncio.Protocol):
    """The taken-over socket: replies are handed to the calls in the order their commands were written."""

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.loop = loop
        self.transport = writer.transport
        self._writer = writer  # a StreamWriter closes its transport when it is collected
        self.timeout = timeout
        self.reader = hiredis.Reader(replyError=redis.ResponseError)
        self.waiters: collections.deque[_Waiter] = collections.deque()
        self.closed = False
        self._outgoing: list[bytes] = []
        self._timer: asyncio.Handle | None = None

    def request(self, payload: bytes, expected: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self.waiters.append(_Waiter(future, expected))
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        self._outgoing.append(payload)
        return future

    def _flush(self) -> None:
        """Write the commands of every call made since the last write, in one: an engine's step ends many streams
        at once, and each write to an idle Redis costs the sender its wake-up (most of a command's CPU here).

        Their time to answer starts now: a busy loop may have run this long after the calls, and its own delay is
        not Redis'. The calls are the waiters at the end of the queue, one per command written."""
        outgoing, self._outgoing = self._outgoing, []
        if self.closed:
            return
        self.transport.write(b"".join(outgoing))
        deadline = self.loop.time() + self.timeout
        for waiter in itertools.islice(reversed(self.waiters), len(outgoing)):
            waiter.deadline = deadline
        if self._timer is None:
            self._timer = self.loop.call_at(deadline, self._deadline_check)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                waiter = self.waiters[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.expected:
                    self.waiters.popleft()
                    if not waiter.future.done():  # its caller may have been cancelled (the client left)
                        waiter.future.set_result(waiter.replies)
        except (hiredis.ProtocolError, IndexError):
            self.abort(redis.ConnectionError("Redis sent a reply that does not follow its protocol"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort(redis.ConnectionError("the connection to Redis was lost"))

    def _deadline_check(self, polled: bool = False) -> None:
        """One timer for all calls: it fires when the oldest call's time is up, and fails them all if it still
        waits (Redis answers in order, so nothing behind it has its reply either).

        Not before the loop has polled its sockets once more: a loop kept busy past the deadline (a burst, a long
        collection, a throttled CPU) runs its due timers before it reads what came meanwhile (uvloop at the end of
        each turn), and the reply may be waiting in the socket. Two turns of the loop, since a callback scheduled
        from a timer runs before the next poll in either loop."""
        self._timer = None
        if not self.waiters:
            return
        oldest = self.waiters[0].deadline
        if oldest == math.inf:
            return  # nothing written waits: the next write starts the timer
        if self.loop.time() < oldest:
            self._timer = self.loop.call_at(oldest, self._deadline_check)
        elif polled:
            self.abort(redis.TimeoutError("Redis did not answer in time"))
        else:
            self._timer = self.loop.call_soon(self.loop.call_soon, self._deadline_check, True)

    def abort(self, error: redis.RedisError) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            future = self.waiters.popleft().future
            if not future.done():
                future.set_exception(error)


class RedisPipe:
    """The shared connection, made on first use and again after it is lost, from `client`'s pool settings, and
    bounded by its timeout. A timeout here or in `client` fails the calls of both that follow within one timeout at
    once: an outage costs a request one timeout, not one per call."""

    def __init__(self, client: GatewayRedis) -> None:
        self._client = client
        self._timeout = settings.INFERIA_REDIS_TIMEOUT_SECONDS
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Task[_PipeProtocol] | None = None

    async def execute(self, payload: bytes, *, replies: int = 1) -> list[Any]:
        """Write `payload` (`replies` commands, see `resp_command`) and return their replies; raises the first
        error reply as redis.ResponseError, and redis.ConnectionError or redis.TimeoutError when Redis cannot
        answer. A lost connection (Redis restarted, or a master demoted by a failover) is tried once more on a
        fresh one."""
        self._client.stall_check()
        try:
            try:
                return await self._attempt(payload, replies)
            except redis.ConnectionError:
                return await self._attempt(payload, replies)
        except redis.TimeoutError:
            self._client.stall_mark()
            raise

    async def _attempt(self, payload: bytes, replies: int) -> list[Any]:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connected()
        answers = await protocol.request(payload, replies)
        for answer in answers:
            if isinstance(answer, redis.ResponseError):
                if str(answer).startswith("READONLY"):
                    # Connected to a master that a failover demoted: the next connection asks Sentinel again.
                    protocol.abort(redis.ConnectionError(str(answer)))
                    raise redis.ConnectionError(str(answer))
                raise answer
        return answers

    async def _connected(self) -> _PipeProtocol:
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
        # Shielded: one caller's cancellation must not fail the connection the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> _PipeProtocol:
        connection = self._client.connection_pool.make_connection()
        await connection.connect()
        writer = connection._writer
        assert writer is not None
        connection._reader = connection._writer = None  # the socket is the protocol's now, not redis-py's
        protocol = _PipeProtocol(asyncio.get_running_loop(), writer, self._timeout)
        writer.transport.set_protocol(protocol)
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.abort(redis.ConnectionError("the gateway closed its Redis pipe"))
            self._protocol = None


class PipeScript:
    """A Lua script run on a pipe by its SHA (EVALSHA), and sent whole (EVAL, which also loads it) when Redis does not
    know it: after a restart, a flush or a failover."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()

    async def run(self, pipe: RedisPipe, keys: list[str], args: list[str | int]) -> Any:
        try:
            (reply,) = await pipe.execute(resp_command(b"EVALSHA", self.sha, len(keys), *keys, *args))
        except redis.ResponseError as unknown:
            if not str(unknown).startswith("NOSCRIPT"):
                raise
            (reply,) = await pipe.execute(resp_command(b"EVAL", self.source, len(keys), *keys, *args))
        return reply
