"""Exact prompt counts for admission, through the real web process: a request is reserved with the cheap upper bound
of its prompt, and only when a token or money limit refuses that bound but might take the exact count is the
engine's `/tokenize` asked (once), and the request admitted with it. Engines without /tokenize fall back to the
bound, and are not asked again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from apps.policies.limits import quota_usage_get
from inferia_sim.tokens import chat_prompt_token_count
from tests.factories import ComputePoolFactory, OrganizationFactory, ProviderFactory, deployment_serving
from tests.gateway.conftest import http, make_key, wait_until_served
from tests.gateway.stand_ins import ScriptedEngine, scripted_engine
from tests.gateway.test_policy_limits import tenant_with_policy
from tests.kit.processes import TestProcess
from tests.kit.waiting import eventually
from tests.sim.conftest import metrics

MESSAGES = [{"role": "user", "content": "word " * 80}]
BODY = {"model": "gw-chat", "messages": MESSAGES, "max_tokens": 16}
# At 1 micro per prompt token and 2 per answer token (tenant_with_policy's prices): the cheap bound reserves
# 16 + 8 + 400 bytes = 424 prompt tokens, 456 micros; the engine counts 106 prompt tokens, 138 micros.
BOUND_MICROS = 424 + 16 * 2
EXACT_PROMPT_TOKENS = chat_prompt_token_count(MESSAGES)
EXACT_MICROS = EXACT_PROMPT_TOKENS + 16 * 2


def tokenize_requests(engine: TestProcess) -> float:
    return metrics(engine.url)["inferia_sim:tokenize_requests_total"]


def chat(gateway: TestProcess, secret: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body or BODY, secret=secret)
    return status, json.loads(raw)


def settled(scope: str, redis_cache: Any) -> dict[str, int]:
    """The day's counters once nothing is held any more (the gateway settles just after the answer's last byte)."""

    def usage_settled() -> dict[str, int] | None:
        usage = quota_usage_get(redis_cache, scope=scope, period="d")
        return None if usage["usd_held"] or usage["tok_held"] else usage

    return eventually(usage_settled, what="nothing held any more")


def test_the_sums_in_this_module_hold():
    assert EXACT_PROMPT_TOKENS == 106
    assert EXACT_MICROS < 300 < BOUND_MICROS


def test_a_request_over_the_budget_by_its_bound_but_not_by_its_exact_count_is_admitted(
    transactional_db, sim, gateway, redis_cache
):
    tenant = tenant_with_policy(gateway, sim.url, budget_per_day_micros=300)
    asked = tokenize_requests(sim)

    status, answer = chat(gateway, tenant.secret)

    assert status == 200, answer
    assert tokenize_requests(sim) == asked + 1
    usage = settled(f"{{o{tenant.organization.pk}}}:o", redis_cache)
    # Settled to the engine's usage, as any request.
    assert answer["usage"]["prompt_tokens"] == EXACT_PROMPT_TOKENS
    assert usage["usd_held"] == 0
    assert usage["usd_used"] == EXACT_PROMPT_TOKENS + 2 * answer["usage"]["completion_tokens"]


def test_a_request_whose_exact_count_does_not_fit_either_is_refused(transactional_db, sim, gateway, redis_cache):
    tenant = tenant_with_policy(gateway, sim.url, tokens_per_day=EXACT_PROMPT_TOKENS + 16 - 1)
    asked = tokenize_requests(sim)

    status, answer = chat(gateway, tenant.secret)

    assert status == 429
    assert answer["error"]["code"] == "quota_exceeded"
    assert tokenize_requests(sim) == asked + 1
    assert quota_usage_get(redis_cache, scope=f"{{o{tenant.organization.pk}}}:o", period="d")["tok_held"] == 0


def test_a_request_whose_answer_alone_is_over_what_is_left_is_refused_without_a_count(
    transactional_db, sim, gateway, redis_cache
):
    tenant = tenant_with_policy(gateway, sim.url, tokens_per_day=10)  # less than max_tokens
    asked = tokenize_requests(sim)

    status, answer = chat(gateway, tenant.secret)

    assert (status, answer["error"]["code"]) == (429, "quota_exceeded")
    assert tokenize_requests(sim) == asked


def test_no_count_is_asked_while_the_limits_are_far_from_their_bounds(transactional_db, sim, gateway, redis_cache):
    tenant = tenant_with_policy(
        gateway, sim.url, budget_per_day_micros=10**9, tokens_per_minute=100_000, tokens_per_month=10**9
    )
    asked = tokenize_requests(sim)

    statuses = [chat(gateway, tenant.secret)[0] for _ in range(3)]
    streamed, _, _ = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**BODY, "stream": True}, secret=tenant.secret
    )

    assert statuses == [200, 200, 200]
    assert streamed == 200
    assert tokenize_requests(sim) == asked


@pytest.fixture
def external_engine() -> Iterator[ScriptedEngine]:
    with scripted_engine(["Hel", "lo"]) as running:
        yield running


def test_an_engine_without_tokenize_keeps_the_bound_and_is_asked_only_once(
    transactional_db, private_gateway, external_engine
):
    from django.db import transaction

    from apps.compute.models import Provider
    from apps.policies.services import policy_create

    organization = OrganizationFactory(name="Outside", slug="outside")
    policy_create(actor=None, organization=organization, budget_per_day_micros=300)
    _key, secret = make_key(organization)
    with transaction.atomic():
        provider = ProviderFactory(organization=organization, name="ext", kind=Provider.Kind.EXTERNAL)
        deployment_serving(
            organization, "gw-ext", [external_engine.url],
            pool=ComputePoolFactory(organization=organization, provider=provider, name="pool-ext"), model_id="up/model",
            price_input_per_mtok_micros=1_000_000, price_output_per_mtok_micros=2_000_000,
        )  # fmt: skip
    wait_until_served(private_gateway, secret, "gw-ext")

    first = chat(private_gateway, secret, {**BODY, "model": "gw-ext"})
    second = chat(private_gateway, secret, {**BODY, "model": "gw-ext"})

    assert (first[0], first[1]["error"]["code"]) == (429, "budget_exceeded")
    assert (second[0], second[1]["error"]["code"]) == (429, "budget_exceeded")
    assert external_engine.tokenize_requests == 1
    assert external_engine.received == []  # refused before the engine saw the request
