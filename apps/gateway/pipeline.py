"""One `/v1` request, top to bottom: authenticate -> resolve the deployment -> policy (models, max tokens, input
guardrails, limits) -> route -> upstream -> stream (output guardrails) -> settle -> meter.

Each step is a small function; `inference_handle` reads as the list of steps. Nothing here touches PostgreSQL once
the caches are warm: keys and the catalog are in memory (see auth.py and catalog.py), and the one write, the usage
event, goes to a Redis stream before the response ends. Steps marked `@traced` are spans when OpenTelemetry tracing
is on (see tracing.py); when it is off the decorator hands back the function itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass

import aiohttp
from django.conf import settings
from pydantic import BaseModel, ValidationError

from apps.gateway import errors, metrics
from apps.gateway.auth import bearer_secret
from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.errors import GatewayError
from apps.gateway.exchange import Exchange
from apps.gateway.metering import UsageEvent, usage_append
from apps.gateway.output_guardrails import OutputGuard
from apps.gateway.runtime import GatewayRuntime, runtime
from apps.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    InferenceRequest,
    validation_message,
)
from apps.gateway.templating import template_apply
from apps.gateway.tracing import traced
from apps.keys.selectors import KeyPrincipal
from apps.policies.effective import EffectivePolicy
from apps.policies.errors import PolicyDenied, PolicyUnavailable, guardrail_violation
from apps.policies.guardrails import guardrails_check_input
from apps.policies.limits import (
    ActualUsage,
    Admission,
    RequestCost,
    limits_admit,
    limits_settle,
    prompt_tokens_upper_bound,
)
from apps.policies.selectors import PolicyKeyNotFound

INFERENCE_SCOPE = "inference"
_USAGE_MARKERS = (b'"usage":{', b'"usage": {')
_PROMPT_TOKENS = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION_TOKENS = re.compile(rb'"completion_tokens":\s*(\d+)')
_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}}'
# For estimates when the engine's usage never arrived (client gone, engine died): a rough bytes-per-token ratio.
_BYTES_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An inference endpoint: its name in usage records, its request schema and whether it can stream."""

    name: str
    schema: type[BaseModel]
    streams: bool


CHAT_COMPLETIONS = Endpoint("chat.completions", ChatCompletionRequest, streams=True)
COMPLETIONS = Endpoint("completions", CompletionRequest, streams=True)
EMBEDDINGS = Endpoint("embeddings", EmbeddingRequest, streams=False)


# --- The inference path -------------------------------------------------------------------------------------------


@traced("gateway.request")
async def inference_handle(exchange: Exchange, endpoint: Endpoint) -> None:
    """Serve one inference request and meter it."""
    rt = runtime()
    try:
        principal = await authenticate(rt, exchange)
    except GatewayError as error:
        metrics.request_counted(model="", organization="", status=error.status)
        await exchange.respond_error(error)
        return
    usage = UsageEvent(
        request_id=exchange.request_id,
        started_at=exchange.started_wall,
        endpoint=endpoint.name,
        key_id=principal.key_id,
        organization_id=principal.organization_id,
        team_id=principal.team_id,
    )
    rt.in_flight += 1
    metrics.IN_FLIGHT.inc()
    try:
        failure: GatewayError | None = None
        try:
            failure = await _inference_steps(rt, exchange, endpoint, principal, usage)
        except asyncio.CancelledError:
            if not exchange.client_gone:
                raise
            # We cancelled ourselves because the client left: stop here, but still meter what was delivered.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            usage.outcome, usage.status = "cancelled", 499
        await meter(rt, exchange, usage, principal)
        if failure is not None:
            await exchange.respond_error(failure)  # after metering: the usage event exists before the client knows
        if exchange.response_started and not exchange.client_gone:
            await exchange.stream_end()
    finally:
        rt.in_flight -= 1
        metrics.IN_FLIGHT.dec()


async def _inference_steps(
    rt: GatewayRuntime, exchange: Exchange, endpoint: Endpoint, principal: KeyPrincipal, usage: UsageEvent
) -> GatewayError | None:
    """The request's steps; the error to answer with (recorded on `usage`), or None when an answer was sent."""
    admission: Admission | None = None
    try:
        await template_apply(
            exchange, organization_id=principal.organization_id, cache=rt.templates, chat=endpoint is CHAT_COMPLETIONS
        )
        request = request_parse(exchange, endpoint)
        usage.model = request.model
        route = await deployment_resolve(rt, principal, request.model)
        usage.deployment_id = route.id
        policy = await policy_resolve(rt, principal)
        checked = await policy_check(policy, exchange, endpoint, request, usage)
        admission = await limits_reserve(rt, exchange, policy, route, checked)
        body, client_wants_usage = upstream_body(upstream_model_set(checked, route), request)
        guard = output_guard(policy, endpoint)
        await upstream_relay(rt, exchange, route, request, body, client_wants_usage, usage, endpoint, guard)
    except GatewayError as error:
        usage.status = error.status
        usage.outcome = "denied" if error.code in _DENIAL_CODES else "error"
        usage.error_code = error.code or error.type
        if error.status == 429:
            metrics.rate_limited_counted(organization=principal.organization_slug, code=usage.error_code)
        return error
    finally:
        if admission is not None:
            await usage_settle(rt, admission, usage)
    return None


@traced("gateway.auth")
async def authenticate(rt: GatewayRuntime, exchange: Exchange) -> KeyPrincipal:
    """The caller's key principal; 401 for a missing or unusable key, 403 for a key without the inference scope."""
    secret = bearer_secret(exchange.authorization)
    if secret is None:
        raise errors.invalid_api_key()
    principal = await rt.keys.principal(secret)
    if principal is None:
        raise errors.invalid_api_key()
    if INFERENCE_SCOPE not in principal.scopes:
        raise errors.insufficient_scope(INFERENCE_SCOPE)
    return principal


def request_parse(exchange: Exchange, endpoint: Endpoint) -> InferenceRequest:
    """The validated request body; 400 with the first problem otherwise (bad JSON, invalid UTF-8, wrong types)."""
    try:
        request = endpoint.schema.model_validate_json(exchange.body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None
    return request  # type: ignore[return-value]


async def deployment_resolve(rt: GatewayRuntime, principal: KeyPrincipal, model: str) -> DeploymentRoute:
    """The deployment the caller's organisation means by `model`: its own first, then a platform one shared with it.
    An unknown name reloads the catalog (rate-limited) before answering 404, so a new deployment works at once."""
    catalog = await rt.catalog.get()
    route = catalog.deployment_for(principal.organization_id, model)
    if route is None:
        fresher = await rt.catalog.after_miss()
        route = fresher.deployment_for(principal.organization_id, model) if fresher is not None else None
        if route is None:
            raise errors.model_not_found(model)
    return route


# --- Policy -------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class PolicyChecked:
    """A request that passed its key's policy: the bytes to send (changed when max_tokens was filled in or the
    guardrails redacted), its parsed body and the most tokens it may generate (None: no bound anywhere)."""

    body: bytes
    document: dict[str, object]
    max_tokens: int | None


# Refusals recorded as `denied` on the usage event (the worker audits them per key, reason and minute).
_DENIAL_CODES = frozenset(
    {"model_not_allowed", "max_tokens_exceeded", "guardrail_violation", "rate_limit_exceeded", "quota_exceeded",
     "budget_exceeded"}
)  # fmt: skip


async def policy_resolve(rt: GatewayRuntime, principal: KeyPrincipal) -> EffectivePolicy:
    """The key's effective policy (organisation, team and key levels), from memory once warm."""
    try:
        return await rt.policies.get(principal.key_id)
    except PolicyKeyNotFound:
        raise errors.invalid_api_key() from None  # deleted since it was cached


@traced("gateway.policy")
async def policy_check(
    policy: EffectivePolicy, exchange: Exchange, endpoint: Endpoint, request: InferenceRequest, usage: UsageEvent
) -> PolicyChecked:
    """Allowed model, max_tokens (the policy's default filled in when the request gives none) and the input
    guardrails, in that order; a refusal raises before anything is counted."""
    try:
        policy.model_check(request.model)
        document: dict[str, object] = json.loads(exchange.body)
        changed = False
        max_tokens = None
        if endpoint.streams:
            requested = getattr(request, "max_tokens", None) or getattr(request, "max_completion_tokens", None)
            max_tokens = policy.max_tokens_resolve(requested)
            if requested is None and max_tokens is None and _counts_tokens(policy):
                # Token quotas and budgets need a worst case: bound the answer, and tell the engine the bound.
                max_tokens = settings.INFERIA_GATEWAY_DEFAULT_MAX_TOKENS
            if requested is None and max_tokens is not None:
                document["max_tokens"] = max_tokens
                changed = True
        verdict = await guardrails_check_input(policy.guardrails, document)
    except PolicyDenied as denial:
        raise errors.policy_denied(denial) from None
    if verdict.hits:
        usage.guardrails = verdict.usage_entries()
    if verdict.blocked is not None:
        raise errors.policy_denied(guardrail_violation(verdict.blocked))
    if verdict.redacted:
        changed = True
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode() if changed else exchange.body
    return PolicyChecked(body=body, document=document, max_tokens=max_tokens)


def _counts_tokens(policy: EffectivePolicy) -> bool:
    return any(
        level.tokens_per_minute is not None
        or level.tokens_per_day is not None
        or level.tokens_per_month is not None
        or level.budget_per_day_micros is not None
        or level.budget_per_month_micros is not None
        for level in policy.levels
    )


@traced("gateway.limits")
async def limits_reserve(
    rt: GatewayRuntime, exchange: Exchange, policy: EffectivePolicy, route: DeploymentRoute, checked: PolicyChecked
) -> Admission | None:
    """Check and count every rate limit, quota and budget of the request in one Redis round trip, reserving its
    worst case; None when its policy counts nothing. The `x-ratelimit-*` headers go on whatever answer follows."""
    if not policy.counted_levels:
        return None
    choices = checked.document.get("n")
    cost = RequestCost(
        prompt_tokens=prompt_tokens_upper_bound(checked.document),
        max_tokens=(checked.max_tokens or 0) * (choices if isinstance(choices, int) and choices > 1 else 1),
        price_input_per_mtok_micros=route.price_input_per_mtok_micros,
        price_output_per_mtok_micros=route.price_output_per_mtok_micros,
    )
    try:
        admission = await limits_admit(rt.redis, policy, cost, request_id=exchange.request_id)
    except PolicyDenied as denial:
        raise errors.policy_denied(denial) from None
    except PolicyUnavailable:
        raise errors.policy_unavailable() from None
    exchange.extra_headers = [(name.encode(), value.encode()) for name, value in admission.headers]
    return admission


def output_guard(policy: EffectivePolicy, endpoint: Endpoint) -> OutputGuard | None:
    """The answer's output guardrails, or None (nothing scanned, nothing held back) when the profile has none."""
    if not endpoint.streams or not policy.guardrails.output_enabled:
        return None
    return OutputGuard(policy.guardrails, chat=endpoint is CHAT_COMPLETIONS)


async def usage_settle(rt: GatewayRuntime, admission: Admission, usage: UsageEvent) -> None:
    """Replace the request's reservation with what it used (nothing, when it failed before the engine answered)."""
    await limits_settle(
        rt.redis,
        admission,
        ActualUsage(
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, cost_micros=usage.cost_micros
        ),
    )


# --- Upstream -----------------------------------------------------------------------------------------------------


def upstream_model_set(checked: PolicyChecked, route: DeploymentRoute) -> bytes:
    """The body with `model` set to the name the engine serves when that differs from the client's (an external
    deployment's server knows only its model_id); the checked body, untouched, on the common path."""
    if route.upstream_model is None:
        return checked.body
    document = {**checked.document, "model": route.upstream_model}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def upstream_body(body: bytes, request: InferenceRequest) -> tuple[bytes, bool]:
    """The bytes to send upstream, and whether the client asked for the usage chunk itself.

    The client's own bytes go upstream (vendor fields included); a streamed request is patched to ask the engine
    for usage (`stream_options.include_usage`), so that metering is exact. Only when the client sent its own
    `stream_options` without usage is the body re-serialised.
    """
    if not getattr(request, "stream", False):
        return body, False
    options = request.stream_options  # type: ignore[union-attr]
    if options is not None and options.include_usage:
        return body, True
    if "stream_options" not in request.model_fields_set:
        return body.rstrip()[:-1] + _INCLUDE_USAGE, False
    document = json.loads(body)
    document["stream_options"] = {**(document.get("stream_options") or {}), "include_usage": True}
    return json.dumps(document).encode(), False


async def upstream_relay(
    rt: GatewayRuntime,
    exchange: Exchange,
    route: DeploymentRoute,
    request: InferenceRequest,
    body: bytes,
    client_wants_usage: bool,
    usage: UsageEvent,
    endpoint: Endpoint,
    guard: OutputGuard | None = None,
) -> None:
    """Route to a replica and relay its answer. A replica that fails before the first byte is retried on another
    (bounded by INFERIA_UPSTREAM_RETRIES); the last failure is the answer when none succeeds."""
    session = exchange.session_id or getattr(request, "user", None)
    tried: tuple[int, ...] = ()
    failure: GatewayError = errors.no_replica(route.served_model_name)
    for _attempt in range(1 + settings.INFERIA_UPSTREAM_RETRIES):
        replica = rt.router.choose(route, tried=tried, session=session)
        if replica is None:
            break
        tried = (*tried, replica.id)
        usage.replica_id = replica.id
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
    raise failure


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
    http = rt.guarded_http() if route.external else rt.http
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(route.first_byte_timeout_s):
            response = await http.post(replica.urls[endpoint.name], data=body, headers=headers, timeout=route.timeout)
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
    if streaming and response.status == 200:
        if not first:
            response.release()
            return _replica_failed(rt, replica, "empty_stream", 502)
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
    else:
        usage.outcome, usage.error_code = "error", f"upstream_{response.status}"
    usage.ttft_ms = (time.perf_counter() - exchange.started) * 1000
    await exchange.respond(
        response.status, first, response.headers.get("Content-Type", "application/json").encode("latin-1")
    )
    return None


def _replica_failed(rt: GatewayRuntime, replica: ReplicaTarget, kind: str, status: int) -> GatewayError:
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
                if _USAGE_MARKERS[0] in data or _USAGE_MARKERS[1] in data:
                    data = _usage_event_taken(data, client_wants_usage, usage)
                for upstream_name, served_name in renames:
                    data = data.replace(upstream_name, served_name)
                if data:
                    events += data.count(b"data: ")
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                    last_at = time.perf_counter()
                    if not first_at:
                        first_at = last_at
                        usage.ttft_ms = (first_at - exchange.started) * 1000
                if guard is not None and guard.stopped is not None:
                    usage.status, usage.outcome, usage.error_code = 400, "denied", "guardrail_violation"
                    await exchange.respond_error(errors.output_guardrail_violation(guard.stopped))
                    break
            data = await content.readany()
    except TimeoutError:
        usage.status, usage.outcome, usage.error_code = 504, "error", "upstream_timeout"
        await exchange.respond_error(errors.upstream_timeout())
    except aiohttp.ClientError:
        usage.status, usage.outcome, usage.error_code = 502, "error", "upstream_stream_broken"
        await exchange.respond_error(errors.upstream_failed("The model's engine stopped in the middle of the answer."))
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
    """Read the engine's usage from the events in `data`; drop the usage-only event unless the client asked for it."""
    kept: list[bytes] = []
    for event in data.split(b"\n\n"):
        if not event:
            continue
        if event.startswith(b"data: ") and (_USAGE_MARKERS[0] in event or _USAGE_MARKERS[1] in event):
            try:
                document = json.loads(event[6:])
            except ValueError:
                document = None
            if isinstance(document, dict) and isinstance(document.get("usage"), dict):
                counts = document["usage"]
                usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
                usage.completion_tokens = int(counts.get("completion_tokens") or 0)
                if not client_wants_usage and not document.get("choices"):
                    continue
        kept.append(event)
    return b"".join(event + b"\n\n" for event in kept)


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


async def meter(rt: GatewayRuntime, exchange: Exchange, usage: UsageEvent, principal: KeyPrincipal) -> None:
    """Append the request's usage event and count it in the metrics. Runs before the response's last byte, so that
    a web process dying after the response cannot lose it."""
    exchange.finishing = True
    usage.latency_ms = (time.perf_counter() - exchange.started) * 1000
    await usage_append(rt.redis, usage)
    metrics.request_counted(model=usage.model, organization=principal.organization_slug, status=usage.status)
    metrics.request_timed(
        model=usage.model,
        ttft_s=usage.ttft_ms / 1000 if usage.ttft_ms is not None else None,
        inter_token_s=None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )


# --- Models listing -----------------------------------------------------------------------------------------------


def _model_card(route: DeploymentRoute, principal: KeyPrincipal) -> dict[str, object]:
    owner = principal.organization_slug if route.organization_id == principal.organization_id else "inferia"
    card: dict[str, object] = {
        "id": route.served_model_name,
        "object": "model",
        "created": route.created,
        "owned_by": owner,
    }
    if route.parent is not None:
        card["parent"] = route.parent  # a LoRA adapter names its base model, as vLLM's own listing does
    return card


async def models_list(exchange: Exchange) -> None:
    """`GET /v1/models`: the models the key's organisation may use (its own deployments and platform ones shared with
    it, each with its LoRA adapters), as far as the key's policy allows them."""
    rt = runtime()
    try:
        principal = await authenticate(rt, exchange)
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    catalog = await rt.catalog.get()
    policy = await policy_resolve(rt, principal)
    cards = [
        _model_card(route, principal)
        for route in catalog.deployments_for(principal.organization_id)
        if policy.model_allowed(route.served_model_name)
    ]
    await exchange.respond(200, json.dumps({"object": "list", "data": cards}).encode())


async def model_retrieve(exchange: Exchange, model: str) -> None:
    """`GET /v1/models/{model}`."""
    rt = runtime()
    try:
        principal = await authenticate(rt, exchange)
        route = await deployment_resolve(rt, principal, model)
        policy = await policy_resolve(rt, principal)
        if not policy.model_allowed(model):
            raise errors.model_not_found(model)
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    await exchange.respond(200, json.dumps(_model_card(route, principal)).encode())
