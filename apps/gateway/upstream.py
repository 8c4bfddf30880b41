"""The upstream leg of a `/v1` request: pick a replica, send the request through the pooled client, and relay the
answer as it arrives (server-sent events forwarded whole, never buffered), reading the engine's usage on the way.

A replica that fails before its first byte is retried on another; once the first byte is out, a failure can only end
the stream with an error event. Nothing here touches PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

import aiohttp
from django.conf import settings

from apps.gateway import errors, metrics
from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.errors import GatewayError
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
USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
# For estimates when the engine's usage never arrived (client gone, engine died): a rough bytes-per-token ratio.
_BYTES_PER_TOKEN = 4


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
    http = rt.guarded_http() if route.external else rt.http
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(route.first_byte_timeout_s):
            response = await http.post(
                replica.urls[endpoint.upstream_name], data=body, headers=headers, timeout=route.timeout
            )
            if response.status >= 500:
                await response.read()
                return _replica_failed(rt, replica, f"http_{response.status}", response.status)
            first = await response.content.readany() if streaming and response.status == 200 else await response.read()
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        return _replica_failed(rt, replica, type(exc).__name__, 502)
    except TimeoutError:
        rt.router.failed(replica)
        metrics.upstream_error_counted(replica_id=replica.id, kind="timeout")
        raise errors.upstream_timeout() from None
    except aiohttp.ClientError as exc:
        return _replica_failed(rt, replica, type(exc).__name__, 502)
    finally:
        if response is not None and not (streaming and response.status == 200):
            response.release()
    assert response is not None
    if streaming and response.status == 200 and not first:
        response.release()
        return _replica_failed(rt, replica, "empty_stream", 502)
    # Which deployment answered: through a model route, the client cannot tell from the model it asked for.
    exchange.served_by = route.served_model_name
    exchange.served_provider = route.provider
    exchange.extra_headers = [*exchange.extra_headers, (DEPLOYMENT_HEADER, route.served_model_name.encode())]
    if streaming and response.status == 200:
        rt.router.succeeded(replica)
        await stream_relay(exchange, response, first, client_wants_usage, usage, route, guard)
        return None
    # A complete answer: success, or the engine's own 4xx (already in OpenAI's shape), passed through as is.
    rt.router.succeeded(replica)
    usage.status = response.status
    if response.status == 200:
        usage_from_body(first, usage, route)
        for upstream_name, served_name in route.model_renames:
            first = first.replace(upstream_name, served_name)
        if guard is not None:
            first = guard.body(first)
            usage.guardrails = [*usage.guardrails, *guard.usage_entries()]
            if guard.stopped is not None:
                raise errors.output_guardrail_violation(guard.stopped)
        if exchange.retrieved is not None and first.rstrip().endswith(b"}"):
            first = first.rstrip()[:-1] + b',"retrieval":' + exchange.retrieved + b"}"
        if exchange.answer_capture is not None:
            exchange.answer_capture.body(first)
    else:
        usage.outcome, usage.error_code = "error", f"upstream_{response.status}"
        usage.error_message = _engine_error_message(first)
    usage.ttft_ms = (time.perf_counter() - exchange.started) * 1000
    await exchange.respond(
        response.status,
        first,
        response.headers.get("Content-Type", "application/json").encode("latin-1"),
        hold_last_byte=True,  # until the request is metered (see inference_handle)
    )
    return None


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
    """Forward the engine's server-sent events as they arrive, whole events at a time (never a half event, so an
    error event can always follow). The engine's usage event is read for metering, and dropped from the client's
    stream when the client did not ask for it. With output guardrails, each event's text passes the `guard` first,
    and a stop ends the stream with a `guardrail_violation` error event. Where the engine serves the model under
    another name (external deployments), each event's `model` is renamed to the one the client asked for."""
    usage.streamed = True
    renames = route.model_renames
    await exchange.stream_start()
    send = exchange.send
    content = response.content
    pending = b""
    events = 0
    first_at = last_at = 0.0
    capture = exchange.answer_capture
    data = first
    try:
        while data:
            if pending:
                data = pending + data
            cut = data.rfind(b"\n\n") + 2
            if cut == 1:
                pending = data
            else:
                if cut == len(data):
                    pending = b""
                else:
                    pending, data = data[cut:], data[:cut]
                if guard is not None:
                    data = guard.events(data)
                if USAGE_MARKERS[0] in data or USAGE_MARKERS[1] in data:
                    data = _usage_event_taken(data, client_wants_usage, usage)
                for upstream_name, served_name in renames:
                    data = data.replace(upstream_name, served_name)
                if data:
                    if capture is not None:
                        capture.events(data)
                    events += data.count(b"data: ")
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    last_at = time.perf_counter()
                    if not first_at:
                        first_at = last_at
                        usage.ttft_ms = (first_at - exchange.started) * 1000
                if guard is not None and guard.stopped is not None:
                    stopped = errors.output_guardrail_violation(guard.stopped)
                    usage.status, usage.outcome, usage.error_code = 400, "denied", "guardrail_violation"
                    usage.error_message = stopped.message
                    await exchange.respond_error(stopped)
                    break
            data = await content.readany()
    except TimeoutError:
        timeout = errors.upstream_timeout()
        usage.status, usage.outcome, usage.error_code = 504, "error", "upstream_timeout"
        usage.error_message = timeout.message
        await exchange.respond_error(timeout)
    except aiohttp.ClientError:
        broken = errors.upstream_failed("The model's engine stopped in the middle of the answer.")
        usage.status, usage.outcome, usage.error_code = 502, "error", "upstream_stream_broken"
        usage.error_message = broken.message
        await exchange.respond_error(broken)
    finally:
        if guard is not None:
            usage.guardrails = [*usage.guardrails, *guard.usage_entries()]
        if content.at_eof():
            response.release()
        else:
            response.close()  # drops the connection: the engine stops generating for a client that is gone
        if not usage.prompt_tokens and not usage.completion_tokens:
            # No usage event from the engine (client left, engine died): count what was delivered, mark estimated.
            usage.estimated = True
            usage.prompt_tokens = len(exchange.body) // _BYTES_PER_TOKEN
            usage.completion_tokens = max(0, events - 1)  # less the role event
        usage.cost_micros = route.cost_micros(usage.prompt_tokens, usage.completion_tokens)
        if events > 2 and last_at > first_at:
            usage_itl = (last_at - first_at) / (events - 1)
            metrics.request_timed(
                model=usage.model, ttft_s=None, inter_token_s=usage_itl, prompt_tokens=0, completion_tokens=0
            )


def _usage_event_taken(data: bytes, client_wants_usage: bool, usage: UsageEvent) -> bytes:
    """Read the engine's usage from the whole events in `data`; drop the usage-only event unless the client asked
    for it. Only events holding a usage object are parsed, searched from the end (the last one counts): the rest of
    the stream passes as it came. The marker cannot occur inside generated text, where JSON escapes its quotes."""
    found = False
    position = len(data)
    while position > 0:
        marker_at = max(data.rfind(USAGE_MARKERS[0], 0, position), data.rfind(USAGE_MARKERS[1], 0, position))
        if marker_at == -1:
            break
        boundary = data.rfind(b"\n\n", 0, marker_at)
        start = boundary + 2 if boundary != -1 else 0
        end = data.find(b"\n\n", marker_at)
        end = len(data) if end == -1 else end + 2
        position = start
        if not data.startswith(b"data: ", start):
            continue
        try:
            document = json.loads(data[start + 6 : end])
        except ValueError:
            continue
        if not isinstance(document, dict) or not isinstance(document.get("usage"), dict):
            continue
        if not found:
            counts = document["usage"]
            usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
            usage.completion_tokens = int(counts.get("completion_tokens") or 0)
            found = True
        if not client_wants_usage and not document.get("choices"):
            data = data[:start] + data[end:]
    return data


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
