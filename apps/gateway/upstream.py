"""The upstream leg of a `/v1` request: pick a replica, send the request through the pooled client, and relay the
answer as it arrives (server-sent events forwarded whole, never buffered), reading the engine's usage on the way.

A replica that fails before its first byte is retried on another; once the first byte is out, a failure can only end
the stream with an error event. Nothing here touches PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Callable

import aiohttp
from django.conf import settings

from apps.gateway import errors, metrics
from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.engine_stream import (
    EngineAnswerInvalid,
    EngineConnection,
    EngineDisconnected,
    EngineStreams,
    EngineTarget,
    request_head,
)
from apps.gateway.errors import GatewayError
from apps.gateway.event_relay import EventRelay, coalescer_for
from apps.gateway.exchange import Exchange
from apps.gateway.output_guardrails import OutputGuard
from apps.gateway.prefix_index import prefix_hashes, prompt_text
from apps.gateway.runtime import GatewayRuntime
from apps.gateway.schemas import Endpoint, InferenceRequest
from apps.gateway.tracing import ENABLED as TRACING
from apps.gateway.tracing import trace_context_inject, traced
from apps.usage.events import ERROR_MESSAGE_MAX, UsageEvent

logger = logging.getLogger(__name__)

DEPLOYMENT_HEADER = b"x-inferia-deployment"
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')


async def upstream_relay(
    rt: GatewayRuntime,
    exchange: Exchange,
    chain: tuple[DeploymentRoute, ...],
    request: InferenceRequest,
    body_for: Callable[[DeploymentRoute], bytes],
    client_wants_usage: bool,
    usage: UsageEvent,
    endpoint: Endpoint,
    guard: OutputGuard | None = None,
) -> None:
    """Route to a replica of the first deployment of `chain` and relay its answer. A replica that fails before the
    first byte is retried on another (bounded by INFERIA_UPSTREAM_RETRIES); when every replica of a deployment is
    down, circuit-broken or failed (or, short of the last, over INFERIA_FALLBACK_QUEUE_LIMIT), the next deployment
    of the chain (a model route's fallback) gets the same chances. Nothing is retried once a byte went out. The last
    failure is the answer when none succeeds; the usage event names the deployment and replica tried last, which
    are those that served when one did."""
    session = exchange.session_id or getattr(request, "user", None)
    failure: GatewayError = errors.no_replica(usage.model or chain[0].served_model_name)
    last = len(chain) - 1
    for position, route in enumerate(chain):
        if position < last and _queue_full(route):
            metrics.fallback_counted(model=usage.model)
            continue
        body = body_for(route)
        # Hashed once per deployment tried, and only where there is a choice to make.
        prefix = (
            prefix_hashes(prompt_text(request), seed=route.prefix_seed)
            if len(route.replicas) > 1 and settings.INFERIA_ROUTER_PREFIX_AWARE
            else ()
        )
        tried: tuple[int, ...] = ()
        for _attempt in range(1 + settings.INFERIA_UPSTREAM_RETRIES):
            replica = rt.router.choose(route, tried=tried, session=session, prefix=prefix)
            if replica is None:
                break
            tried = (*tried, replica.id)
            usage.deployment_id, usage.replica_id = route.id, replica.id
            rt.router.started(replica)
            try:
                outcome = await upstream_attempt(
                    rt, exchange, route, replica, request, body, client_wants_usage, usage, endpoint, guard
                )
            finally:
                rt.router.finished(replica)
            if outcome is None:
                return
            failure = outcome
        if position < last:
            metrics.fallback_counted(model=usage.model)
    raise failure


def _queue_full(route: DeploymentRoute) -> bool:
    """Whether every replica of `route` reports at least INFERIA_FALLBACK_QUEUE_LIMIT waiting requests (never, when
    the limit is 0): its requests would queue, a fallback would not."""
    limit = settings.INFERIA_FALLBACK_QUEUE_LIMIT
    return limit > 0 and all(replica.waiting >= limit for replica in route.replicas)


@traced("gateway.upstream")
async def upstream_attempt(
    rt: GatewayRuntime,
    exchange: Exchange,
    route: DeploymentRoute,
    replica: ReplicaTarget,
    request: InferenceRequest,
    body: bytes,
    client_wants_usage: bool,
    usage: UsageEvent,
    endpoint: Endpoint,
    guard: OutputGuard | None = None,
) -> GatewayError | None:
    """One try on one replica: None when an answer was relayed, or the error to retry after when the replica failed
    before its first byte. A first-byte timeout is not retried (it would multiply the wait): it raises 504."""
    streaming = getattr(request, "stream", False)
    headers = {**route.upstream_headers, "X-Request-Id": exchange.request_id}
    if TRACING:
        trace_context_inject(headers)
    url = replica.urls[endpoint.upstream_name]
    streams = rt.engine_streams
    if streaming and streams is not None and _fast_relay_serves(exchange, route, guard):
        target = streams.target(url)
        if target is not None:
            return await fast_attempt(
                rt, exchange, streams, route, replica, target, headers, body, client_wants_usage, usage
            )
    http = rt.guarded_http() if route.external else rt.http
    response: aiohttp.ClientResponse | None = None
    first: bytes | None = None
    try:
        async with asyncio.timeout(route.first_byte_timeout_s):
            response = await http.post(url, data=body, headers=headers, timeout=route.timeout)
            if response.status >= 500:
                await response.read()
                return _replica_failed(rt, replica, f"http_{response.status}", response.status)
            first = await response.content.readany() if streaming and response.status == 200 else await response.read()
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        return _replica_failed(rt, replica, type(exc).__name__, 502)
    except TimeoutError:
        raise _first_byte_late(rt, replica) from None
    except aiohttp.ClientError as exc:
        return _replica_failed(rt, replica, type(exc).__name__, 502)
    finally:
        if response is not None and first is None:
            # Nothing taken from it: the client left (this task cancelled), it timed out or failed. Closed, not
            # released: released with its answer unread, the engine would go on generating for nobody.
            response.close()
        elif response is not None and not (streaming and response.status == 200):
            response.release()
    assert response is not None
    assert first is not None
    if streaming and response.status == 200 and not first:
        response.release()
        return _replica_failed(rt, replica, "empty_stream", 502)
    _answered_by(rt, exchange, route, replica)
    if streaming and response.status == 200:
        await stream_relay(exchange, response, first, client_wants_usage, usage, route, guard)
        return None
    content_type = response.headers.get("Content-Type", "application/json").encode("latin-1")
    await answer_relay(exchange, response.status, first, content_type, usage, route, guard)
    return None


# A replica's failures are counted by the names the general relay's client (aiohttp) gives them, whichever relay
# met them: dashboards and alerts read one set of kinds.
_FAILURE_KINDS: dict[type[BaseException], str] = {
    EngineDisconnected: "ServerDisconnectedError",
    EngineAnswerInvalid: "ClientResponseError",
}


def _fast_relay_serves(exchange: Exchange, route: DeploymentRoute, guard: OutputGuard | None) -> bool:
    """Whether this stream may skip the general relay: its events need no work but reading the usage, and the
    server can take them from a socket callback."""
    return (
        exchange.body_writer is not None
        and guard is None
        and exchange.answer_capture is None
        and not route.external
        and not route.model_renames
    )


def _answered_by(rt: GatewayRuntime, exchange: Exchange, route: DeploymentRoute, replica: ReplicaTarget) -> None:
    rt.router.succeeded(replica)
    # Which deployment answered: through a model route, the client cannot tell from the model it asked for.
    exchange.served_by = route.served_model_name
    exchange.served_provider = route.provider
    exchange.extra_headers = [*exchange.extra_headers, (DEPLOYMENT_HEADER, route.served_model_name.encode())]


def _first_byte_late(rt: GatewayRuntime, replica: ReplicaTarget) -> GatewayError:
    rt.router.failed(replica)
    metrics.upstream_error_counted(replica_id=replica.id, kind="timeout")
    return errors.upstream_timeout()


async def answer_relay(
    exchange: Exchange,
    status: int,
    body: bytes,
    content_type: bytes,
    usage: UsageEvent,
    route: DeploymentRoute,
    guard: OutputGuard | None = None,
) -> None:
    """A complete answer: success, or the engine's own 4xx (already in OpenAI's shape), passed through as is."""
    usage.status = status
    if status == 200:
        usage_from_body(body, usage, route)
        for upstream_name, served_name in route.model_renames:
            body = body.replace(upstream_name, served_name)
        if guard is not None:
            body = guard.body(body)
            usage.guardrails = [*usage.guardrails, *guard.usage_entries()]
            if guard.stopped is not None:
                raise errors.output_guardrail_violation(guard.stopped)
        if exchange.retrieved is not None and body.rstrip().endswith(b"}"):
            body = body.rstrip()[:-1] + b',"retrieval":' + exchange.retrieved + b"}"
        if exchange.answer_capture is not None:
            exchange.answer_capture.body(body)
    else:
        usage.outcome, usage.error_code = "error", f"upstream_{status}"
        usage.error_message = _engine_error_message(body)
    usage.ttft_ms = (time.perf_counter() - exchange.started) * 1000
    # The last byte waits until the request is metered (see inference_handle).
    await exchange.respond(status, body, content_type, hold_last_byte=True)


async def fast_attempt(
    rt: GatewayRuntime,
    exchange: Exchange,
    streams: EngineStreams,
    route: DeploymentRoute,
    replica: ReplicaTarget,
    target: EngineTarget,
    headers: dict[str, str],
    body: bytes,
    client_wants_usage: bool,
    usage: UsageEvent,
) -> GatewayError | None:
    """`upstream_attempt` for a stream the fast relay serves: the same outcomes, through `engine_stream`."""
    head = request_head(target, headers, body)
    try:
        async with asyncio.timeout(route.first_byte_timeout_s):
            connection = await streams.request(target, head, body, route.timeout.connect)
    except TimeoutError:
        raise _first_byte_late(rt, replica) from None
    except OSError:  # refused, unreachable, reset while connecting
        return _replica_failed(rt, replica, "ClientConnectorError", 502)
    failure = None
    if connection.error is not None:
        kind = _FAILURE_KINDS.get(type(connection.error), type(connection.error).__name__)
        failure = _replica_failed(rt, replica, kind, 502)
    elif connection.status >= 500:
        failure = _replica_failed(rt, replica, f"http_{connection.status}", connection.status)
    elif connection.status == 200 and not connection.body:
        failure = _replica_failed(rt, replica, "empty_stream", 502)
    if failure is not None:
        streams.release(target, connection)
        return failure
    _answered_by(rt, exchange, route, replica)
    if connection.status != 200:
        answer = connection.body_bytes()
        streams.release(target, connection)
        await answer_relay(exchange, connection.status, answer, connection.content_type, usage, route)
        return None
    await fast_relay(exchange, streams, target, connection, client_wants_usage, usage, route)
    return None


@traced("gateway.stream")
async def fast_relay(
    exchange: Exchange,
    streams: EngineStreams,
    target: EngineTarget,
    connection: EngineConnection,
    client_wants_usage: bool,
    usage: UsageEvent,
    route: DeploymentRoute,
) -> None:
    """Forward the stream from the engine connection's socket callback straight to the client's connection: each
    read's whole events, through the same `EventRelay` as the general relay, written at once (or per stream
    interval, on a timer, when the deployment sets one). This task only waits for the end, and for the client's
    connection to drain when it falls behind (reading the engine pauses then)."""
    metrics.stream_relayed("fast")
    relay = EventRelay(usage, started=exchange.started, client_wants_usage=client_wants_usage)
    writer = exchange.body_writer
    assert writer is not None
    feed = relay.feed
    write = writer.write
    coalescer = coalescer_for(route)
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def sink(data: bytes) -> None:
        data = feed(data)
        if data and not write(data):
            connection.pause()

    def held_write() -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()  # when the end comes first
            timer = None
        if coalescer is not None and coalescer.held and not write(coalescer.take()):
            connection.pause()

    def coalescing_sink(data: bytes) -> None:
        nonlocal timer
        assert coalescer is not None
        data = coalescer.hold(feed(data), loop.time())
        if coalescer.held:
            if timer is None and coalescer.due != math.inf:
                timer = loop.call_at(coalescer.due, held_write)
        elif timer is not None:
            timer.cancel()
            timer = None
        if data and not write(data):
            connection.pause()

    try:
        # Within the try: a client gone while the head waits for room on its connection stops the engine too.
        await exchange.stream_start()
        first = connection.body_bytes()
        connection.body.clear()
        connection.stream(sink if coalescer is None else coalescing_sink, route.timeout.sock_read)
        connection.sink(first)  # type: ignore[misc]
        await connection.streamed(writer.drain)
        held_write()
    except TimeoutError:
        held_write()
        await stream_failed(exchange, relay, errors.upstream_timeout(), 504, "upstream_timeout")
    except ConnectionError:
        held_write()
        await stream_failed(exchange, relay, engine_stopped(), 502, "upstream_stream_broken")
    finally:
        if timer is not None:
            timer.cancel()  # the client left while chunks were held
        streams.release(target, connection)  # closed unless the answer ended: the engine stops for a client gone
        relay.finish(route, len(exchange.body))


def _engine_error_message(body: bytes) -> str:
    """The message of an engine's own error answer (OpenAI's shape), for the usage record; its start otherwise."""
    try:
        document = json.loads(body)
        message = document["error"]["message"]
    except (ValueError, TypeError, KeyError):
        return body[:ERROR_MESSAGE_MAX].decode(errors="replace")
    return str(message)[:ERROR_MESSAGE_MAX]


def _replica_failed(rt: GatewayRuntime, replica: ReplicaTarget, kind: str, status: int) -> GatewayError:
    logger.warning("replica %s failed before answering: %s", replica.id, kind)
    rt.router.failed(replica)
    metrics.upstream_error_counted(replica_id=replica.id, kind=kind)
    if status == 503:
        return errors.upstream_unavailable()
    return errors.upstream_failed()


@traced("gateway.stream")
async def stream_relay(
    exchange: Exchange,
    response: aiohttp.ClientResponse,
    first: bytes,
    client_wants_usage: bool,
    usage: UsageEvent,
    route: DeploymentRoute,
    guard: OutputGuard | None = None,
) -> None:
    """Forward the engine's server-sent events as they arrive, whole events at a time, through the `EventRelay`
    (usage, output guardrails, model renames, capture): one ASGI message per read, or per stream interval when the
    deployment sets one. A guardrail's stop ends the stream with a `guardrail_violation` error event."""
    relay = EventRelay(
        usage,
        started=exchange.started,
        client_wants_usage=client_wants_usage,
        renames=route.model_renames,
        guard=guard,
        capture=exchange.answer_capture,
    )
    metrics.stream_relayed("general")
    coalescer = coalescer_for(route)
    loop = asyncio.get_running_loop()
    send = exchange.send

    async def held_send() -> None:
        if coalescer is not None and coalescer.held:
            await send({"type": "http.response.body", "body": coalescer.take(), "more_body": True})

    content = response.content
    data = first
    try:
        await exchange.stream_start()  # within the try: a client gone while the head waits stops the engine too
        while data:
            data = relay.feed(data)
            if coalescer is not None:
                data = coalescer.hold(data, loop.time())
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            stopped = relay.stopped()
            if stopped is not None:
                await held_send()
                await exchange.respond_error(stopped)
                break
            if coalescer is not None and coalescer.held and coalescer.due != math.inf:
                deadline = asyncio.timeout_at(coalescer.due)
                try:
                    async with deadline:
                        data = await content.readany()
                    continue
                except TimeoutError:
                    if not deadline.expired():
                        raise  # the engine's silence (sock_read), not the interval's
                await held_send()
            data = await content.readany()
        await held_send()
    except TimeoutError:
        await held_send()
        await stream_failed(exchange, relay, errors.upstream_timeout(), 504, "upstream_timeout")
    except aiohttp.ClientError:
        await held_send()
        await stream_failed(exchange, relay, engine_stopped(), 502, "upstream_stream_broken")
    finally:
        if content.at_eof():
            response.release()
        else:
            response.close()  # drops the connection: the engine stops generating for a client that is gone
        relay.finish(route, len(exchange.body))


def engine_stopped() -> GatewayError:
    return errors.upstream_failed("The model's engine stopped in the middle of the answer.")


async def stream_failed(exchange: Exchange, relay: EventRelay, error: GatewayError, status: int, code: str) -> None:
    """End a started stream with `error` as its last event, recorded on the usage."""
    relay.failed(error, status, "error", code)
    await exchange.respond_error(error)


def usage_from_body(body: bytes, usage: UsageEvent, route: DeploymentRoute) -> None:
    """Token counts from a complete answer's `usage`, found without parsing the whole document."""
    start = body.rfind(b'"usage"')
    if start == -1:
        usage.estimated = True
        return
    prompt = _PROMPT_TOKENS.search(body, start)
    completion = _COMPLETION_TOKENS.search(body, start)
    usage.prompt_tokens = int(prompt.group(1)) if prompt else 0
    usage.completion_tokens = int(completion.group(1)) if completion else 0
    usage.cost_micros = route.cost_micros(usage.prompt_tokens, usage.completion_tokens)
