"""One `/v1` request, top to bottom: authenticate -> resolve the deployment -> policy (models, max tokens, input
guardrails, limits) -> route -> upstream -> stream (output guardrails) -> settle -> meter.

Each step is a small function; `inference_handle` reads as the list of steps. Nothing here touches PostgreSQL once
the caches are warm: keys and the catalog are in memory (see auth.py and catalog.py), and the one write, the usage
event, goes to a Redis stream before the response ends. Steps marked `@traced` are spans when OpenTelemetry tracing
is on (see tracing.py); when it is off the decorator hands back the function itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass

from django.conf import settings
from pydantic import ValidationError

from apps.gateway import errors, metrics
from apps.gateway.auth import bearer_secret
from apps.gateway.capture import AnswerCapture, capture_texts
from apps.gateway.catalog import DeploymentRoute, SplitRoute
from apps.gateway.errors import GatewayError
from apps.gateway.exchange import CLIENT_REQUEST_ID_MAX, Exchange
from apps.gateway.output_guardrails import OutputGuard
from apps.gateway.retrieval import retrieval_apply
from apps.gateway.runtime import GatewayRuntime, runtime
from apps.gateway.schemas import Endpoint, InferenceRequest, validation_message
from apps.gateway.templating import template_apply
from apps.gateway.tracing import traced
from apps.gateway.upstream import upstream_relay
from apps.gateway.upstream_tokenize import prompt_tokens_count
from apps.keys.selectors import KeyPrincipal
from apps.policies.costs import ActualUsage, RequestCost, prompt_tokens_upper_bound
from apps.policies.effective import EffectivePolicy
from apps.policies.errors import PolicyDenied, PolicyUnavailable, guardrail_violation, model_not_allowed
from apps.policies.guardrails import guardrails_check_input
from apps.policies.limits import (
    Admission,
    LimitDenied,
    limits_admit,
    limits_settle,
)
from apps.policies.selectors import PolicyKeyNotFound
from apps.usage.events import ERROR_MESSAGE_MAX, UsageEvent
from inferia_runtime.json_codec import json_compact, json_parsed
from inferia_runtime.log_context import log_context_bind

logger = logging.getLogger(__name__)
INFERENCE_SCOPES = frozenset({"inference"})
_INCLUDE_USAGE = b',"stream_options":{"include_usage":true}}'


# --- The inference path -------------------------------------------------------------------------------------------


@traced("gateway.request")
async def inference_handle(exchange: Exchange, endpoint: Endpoint, principal: KeyPrincipal | None = None) -> None:
    """Serve one inference request and meter it; `principal`: the caller, when an edge has authenticated it."""
    rt = runtime()
    if principal is None:
        try:
            principal = await authenticate(rt, exchange)
        except GatewayError as error:
            metrics.request_counted(model="", organization="", status=error.status)
            await exchange.respond_error(error)
            return
    # This request's task only: the lines it logs from here say which request, tenant and key.
    log_context_bind(
        request_id=exchange.request_id, organization=principal.organization_slug, key_prefix=principal.prefix
    )
    usage = usage_event_new(exchange, endpoint, principal)
    if principal.capture:
        exchange.answer_capture = AnswerCapture()
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
            usage.error_message = "The client disconnected before the answer was complete."
        await meter(rt, exchange, usage, principal)
        if usage.status >= 500:
            logger.warning("request failed: %s %s: %s", usage.status, usage.error_code, usage.error_message)
        if failure is not None:
            await exchange.respond_error(failure)  # after metering: the usage event exists before the client knows
        if exchange.response_started and not exchange.client_gone:
            await exchange.stream_end()
    finally:
        rt.in_flight -= 1
        metrics.IN_FLIGHT.dec()


def usage_event_new(exchange: Exchange, endpoint: Endpoint, principal: KeyPrincipal) -> UsageEvent:
    """The usage event of an authenticated request, before anything is known of its answer."""
    return UsageEvent(
        request_id=exchange.request_id,
        started_at=exchange.started_wall,
        endpoint=endpoint.name,
        client_request_id=exchange.client_request_id,
        key_id=principal.key_id,
        organization_id=principal.organization_id,
        team_id=principal.team_id,
    )


def usage_refused(usage: UsageEvent, error: GatewayError) -> None:
    """Record on `usage` the error its request was answered with: a policy's refusal is `denied`, the rest `error`."""
    usage.status = error.status
    usage.outcome = "denied" if error.code in _DENIAL_CODES else "error"
    usage.error_code = error.code or error.type
    usage.error_message = error.message[:ERROR_MESSAGE_MAX]


async def refusal_answer(
    exchange: Exchange, error: GatewayError, endpoint: Endpoint | None, principal: KeyPrincipal | None = None
) -> None:
    """Answer an edge's refusal of a request it could not translate (its body): 401 first for a bad key; with a good
    one, an inference request (`endpoint`) is metered like the pipeline's own refusals, so that every authenticated
    inference request has its usage record."""
    rt = runtime()
    if principal is None:
        try:
            principal = await authenticate(rt, exchange)
        except GatewayError as unauthenticated:
            error = unauthenticated
    if principal is not None and endpoint is not None:
        usage = usage_event_new(exchange, endpoint, principal)
        usage_refused(usage, error)
        await meter(rt, exchange, usage, principal)
    await exchange.respond_error(error)


async def _inference_steps(
    rt: GatewayRuntime, exchange: Exchange, endpoint: Endpoint, principal: KeyPrincipal, usage: UsageEvent
) -> GatewayError | None:
    """The request's steps; the error to answer with (recorded on `usage`), or None when an answer was sent."""
    admission: Admission | None = None
    try:
        request_headers_check(exchange)
        await template_apply(
            exchange, organization_id=principal.organization_id, cache=rt.templates, chat=endpoint.chat
        )
        # Resolved before retrieval, which reads it (whether flagged chunks may enter prompts); from memory once warm.
        policy = await policy_resolve(rt, principal)
        await retrieval_apply(exchange, principal=principal, policy=policy, chat=endpoint.chat)
        request = request_parse(exchange, endpoint)
        usage.model = exchange.model = request.model
        served = await deployment_resolve(rt, principal, request.model)
        checked = await policy_check(policy, exchange, endpoint, request, usage)
        chain = deployments_chain(policy, served)
        usage.deployment_id = chain[0].id
        log_context_bind(model=request.model, deployment=chain[0].id)
        admission = await limits_reserve(rt, exchange, policy, chain, checked)
        body, client_wants_usage = upstream_body(upstream_model_set(checked, chain[0]), request)
        guard = output_guard(policy, endpoint)

        def body_for(route: DeploymentRoute) -> bytes:
            # A fallback's engine may serve another model name: its body is built only when it is tried.
            return body if route is chain[0] else upstream_body(upstream_model_set(checked, route), request)[0]

        await upstream_relay(rt, exchange, chain, request, body_for, client_wants_usage, usage, endpoint, guard)
    except GatewayError as error:
        usage_refused(usage, error)
        if error.status == 429:
            metrics.rate_limited_counted(organization=principal.organization_slug, code=usage.error_code)
        return error
    finally:
        if admission is not None:
            await usage_settle(rt, admission, usage)
    return None


@traced("gateway.auth")
async def authenticate(
    rt: GatewayRuntime, exchange: Exchange, *, scopes: frozenset[str] = INFERENCE_SCOPES
) -> KeyPrincipal:
    """The caller's key principal; 401 for a missing or unusable key, 403 for a key with none of `scopes`."""
    if exchange.key_hash is not None:
        principal = await rt.keys.principal_of_hash(exchange.key_hash)
    else:
        secret = bearer_secret(exchange.authorization)
        if secret is None:
            raise errors.invalid_api_key()
        principal = await rt.keys.principal(secret)
    if principal is None:
        raise errors.invalid_api_key()
    if scopes.isdisjoint(principal.scopes):
        raise errors.insufficient_scope(scopes)
    return principal


def request_headers_check(exchange: Exchange) -> None:
    """400 for a caller's request id we would not store (control characters, spaces, too long)."""
    if exchange.client_request_id_bytes == b"":
        raise errors.invalid_request(
            f"X-Request-ID / X-Client-Request-Id: at most {CLIENT_REQUEST_ID_MAX} printable ASCII characters, "
            "without spaces.",
            param="X-Request-ID",
        )


def request_parse(exchange: Exchange, endpoint: Endpoint) -> InferenceRequest:
    """The validated request body; 400 with the first problem otherwise (bad JSON, invalid UTF-8, wrong types)."""
    try:
        request = endpoint.schema.model_validate_json(exchange.body)
    except ValidationError as error:
        message, param = validation_message(error)
        raise errors.invalid_request(message, param=param) from None
    return request  # type: ignore[return-value]


async def deployment_resolve(rt: GatewayRuntime, principal: KeyPrincipal, model: str) -> DeploymentRoute | SplitRoute:
    """The deployment, or model route, the caller's organisation means by `model`: its own first, then a platform
    deployment shared with it. An unknown name reloads the catalog (rate-limited) before answering 404, so a new
    deployment or route works at once."""
    catalog = await rt.catalog.get()
    route = catalog.served_for(principal.organization_id, model)
    if route is None:
        fresher = await rt.catalog.after_miss()
        route = fresher.served_for(principal.organization_id, model) if fresher is not None else None
        if route is None:
            raise errors.model_not_found(model)
    return route


def deployments_chain(policy: EffectivePolicy, served: DeploymentRoute | SplitRoute) -> tuple[DeploymentRoute, ...]:
    """The deployments to try, in order: the one named, or a model route's target drawn by weight and then its
    fallbacks. The caller was allowed the name it asked for (`policy_check`); through a route, each deployment must
    pass the same allow-list under its own served name, so a route cannot reach a model the key may not use.
    403 `model_not_allowed` when no deployment of the route may serve the key; 503 when none serves now."""
    if isinstance(served, DeploymentRoute):
        return (served,)
    chain = served.chain(random.random(), policy.model_allowed)  # noqa: S311 (a traffic split, not a secret)
    if not chain:
        if served.targets or served.fallbacks:  # deployments serve it, none of them for this key
            raise errors.policy_denied(model_not_allowed(served.name))
        raise errors.no_replica(served.name)
    return chain


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
        document: dict[str, object] = json_parsed(exchange.body)
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
    body = json_compact(document) if changed else exchange.body
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
    rt: GatewayRuntime,
    exchange: Exchange,
    policy: EffectivePolicy,
    chain: tuple[DeploymentRoute, ...],
    checked: PolicyChecked,
) -> Admission | None:
    """Check and count every rate limit, quota and budget of the request in one Redis round trip, reserving its
    worst case (the prompt's cheap upper bound, at the highest prices of the deployments it may reach: any of them
    may end up serving it); None when its policy counts nothing. Only when a token or money limit refuses that bound
    but could take the prompt's exact count is the engine asked for it (see `limits_reserve_exact`). The
    `x-ratelimit-*` headers go on whatever answer follows."""
    if not policy.counted_levels:
        return None
    route = chain[0]
    choices = checked.document.get("n")
    cost = RequestCost(
        prompt_tokens=prompt_tokens_upper_bound(checked.document),
        max_tokens=(checked.max_tokens or 0) * (choices if isinstance(choices, int) and choices > 1 else 1),
        price_input_per_mtok_micros=max(route.price_input_per_mtok_micros for route in chain),
        price_output_per_mtok_micros=max(route.price_output_per_mtok_micros for route in chain),
    )
    try:
        admission = await limits_admit(rt.redis_pipe, policy, cost, request_id=exchange.request_id)
    except LimitDenied as denial:
        admission = await limits_reserve_exact(rt, exchange, policy, route, checked, cost, denial)
    except PolicyDenied as denial:
        raise errors.policy_denied(denial) from None
    except PolicyUnavailable:
        raise errors.policy_unavailable() from None
    exchange.extra_headers = [(name.encode(), value.encode()) for name, value in admission.headers]
    return admission


async def limits_reserve_exact(
    rt: GatewayRuntime,
    exchange: Exchange,
    policy: EffectivePolicy,
    route: DeploymentRoute,
    checked: PolicyChecked,
    cost: RequestCost,
    denial: LimitDenied,
) -> Admission:
    """The second and last try of a request the prompt's upper bound got refused: with the engine's exact count
    when it fits what the refusing limit has left. Raises the refusal (the first, or the second try's) otherwise."""
    room = denial.prompt_tokens_room
    if room is None or room <= 0:
        raise errors.policy_denied(denial) from None
    exact = await prompt_tokens_count(rt, route, checked.document)
    if exact is None or exact > room or exact >= cost.prompt_tokens:
        raise errors.policy_denied(denial) from None
    try:
        return await limits_admit(
            rt.redis_pipe, policy, dataclasses.replace(cost, prompt_tokens=exact), request_id=exchange.request_id
        )
    except PolicyDenied as again:
        raise errors.policy_denied(again) from None
    except PolicyUnavailable:
        raise errors.policy_unavailable() from None


def output_guard(policy: EffectivePolicy, endpoint: Endpoint) -> OutputGuard | None:
    """The answer's output guardrails, or None (nothing scanned, nothing held back) when the profile has none."""
    if not endpoint.streams or not policy.guardrails.output_enabled:
        return None
    return OutputGuard(policy.guardrails, chat=endpoint.chat)


async def usage_settle(rt: GatewayRuntime, admission: Admission, usage: UsageEvent) -> None:
    """Replace the request's reservation with what it used (nothing, when it failed before the engine answered)."""
    await limits_settle(
        rt.redis_pipe,
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
    return json_compact({**checked.document, "model": route.upstream_model})


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
    document = json_parsed(body)
    document["stream_options"] = {**(document.get("stream_options") or {}), "include_usage": True}
    return json_compact(document), False


async def meter(rt: GatewayRuntime, exchange: Exchange, usage: UsageEvent, principal: KeyPrincipal) -> None:
    """Append the request's usage event and count it in the metrics. Runs before the response's last byte, so that
    a web process dying after the response cannot lose it."""
    exchange.finishing = True
    usage.latency_ms = (time.perf_counter() - exchange.started) * 1000
    if principal.capture:
        usage.capture = capture_texts(exchange.body, exchange.answer_capture)
    await rt.usage.append(usage)
    exchange.status = usage.status  # what the request came to, also when a started stream ended in an error
    metrics.request_counted(model=usage.model, organization=principal.organization_slug, status=usage.status)
    metrics.cost_counted(model=usage.model, organization=principal.organization_slug, cost_micros=usage.cost_micros)
    if exchange.served_by:
        metrics.served_by_counted(
            model=usage.model, deployment=exchange.served_by, provider=exchange.served_provider, status=usage.status
        )
    metrics.request_timed(
        model=usage.model,
        ttft_s=usage.ttft_ms / 1000 if usage.ttft_ms is not None else None,
        inter_token_s=None,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
    )


# --- Models listing -----------------------------------------------------------------------------------------------


def model_card(route: DeploymentRoute | SplitRoute, principal: KeyPrincipal) -> dict[str, object]:
    """A model as `/v1/models` lists it."""
    if isinstance(route, SplitRoute):
        return {"id": route.name, "object": "model", "created": route.created, "owned_by": principal.organization_slug}
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


async def model_cards(rt: GatewayRuntime, principal: KeyPrincipal) -> list[dict[str, object]]:
    """The models the key's organisation may use (its own deployments and platform ones shared with it, each with its
    LoRA adapters, and its model routes), as far as the key's policy allows them, by name."""
    catalog = await rt.catalog.get()
    policy = await policy_resolve(rt, principal)
    cards = [
        model_card(route, principal)
        for route in catalog.deployments_for(principal.organization_id)
        if policy.model_allowed(route.served_model_name)
    ]
    cards += [
        model_card(split, principal)
        for split in catalog.splits_for(principal.organization_id)
        if policy.model_allowed(split.name)
    ]
    cards.sort(key=lambda card: str(card["id"]))
    return cards


async def models_list(exchange: Exchange) -> None:
    """`GET /v1/models`: the `model_cards` of the caller's key."""
    rt = runtime()
    try:
        principal = await authenticate(rt, exchange)
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    cards = await model_cards(rt, principal)
    await exchange.respond(200, json.dumps({"object": "list", "data": cards}).encode())


async def model_usable(
    rt: GatewayRuntime, exchange: Exchange, model: str
) -> tuple[KeyPrincipal, DeploymentRoute | SplitRoute]:
    """The caller's key and what it means by `model`; 401 for a bad key, 404 for a model it may not use."""
    principal = await authenticate(rt, exchange)
    exchange.model = model  # for the latency metric, as an inference request's
    route = await deployment_resolve(rt, principal, model)
    policy = await policy_resolve(rt, principal)
    if not policy.model_allowed(model):
        raise errors.model_not_found(model)
    return principal, route


async def model_retrieve(exchange: Exchange, model: str) -> None:
    """`GET /v1/models/{model}`."""
    try:
        principal, route = await model_usable(runtime(), exchange, model)
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    await exchange.respond(200, json.dumps(model_card(route, principal)).encode())


async def tokens_count(exchange: Exchange, model: str, document: dict[str, object]) -> None:
    """A prompt's tokens as the limits count them before the engine answers (`prompt_tokens_upper_bound`), for a
    model the key may use; the engine is not asked."""
    try:
        await model_usable(runtime(), exchange, model)
    except GatewayError as error:
        await exchange.respond_error(error)
        return
    await exchange.respond(200, json.dumps({"input_tokens": prompt_tokens_upper_bound(document)}).encode())
