"""Rate limits, concurrency, quotas and budgets against a real Redis: atomic admission, settlement, reconciliation
and what happens when Redis is unreachable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from django.test import override_settings

from apps.policies.costs import ActualUsage, RequestCost, prompt_tokens_upper_bound
from apps.policies.effective import EffectivePolicy, LevelLimits
from apps.policies.errors import PolicyDenied, PolicyUnavailable
from apps.policies.limits import (
    LimitDenied,
    limits_admit,
    limits_settle,
    quota_usage_get,
)
from inferia_runtime.redis_clients import GatewayRedis
from inferia_runtime.redis_pipe import RedisPipe

ORG = "{o1}:o"
KEY = "{o1}:k7"


def policy(*levels: LevelLimits) -> EffectivePolicy:
    return EffectivePolicy(key_id=7, organization_id=1, team_id=None, levels=levels)


# A request priced at 1,000 micro-units: 100 prompt tokens and 100 output tokens at 5,000,000 per 1M tokens each.
COST = RequestCost(
    prompt_tokens=100, max_tokens=100, price_input_per_mtok_micros=5_000_000, price_output_per_mtok_micros=5_000_000
)


async def test_200_concurrent_requests_against_a_budget_for_50_admit_at_most_50(counters, redis_cache):
    budget = policy(LevelLimits(scope=ORG, budget_per_day_micros=50 * COST.cost_micros))

    async def one(index: int):
        try:
            return await limits_admit(counters, budget, COST, request_id=f"r{index}")
        except PolicyDenied as denied:
            return denied

    outcomes = await asyncio.gather(*(one(index) for index in range(200)))
    admitted = [outcome for outcome in outcomes if not isinstance(outcome, PolicyDenied)]
    denied = [outcome for outcome in outcomes if isinstance(outcome, PolicyDenied)]
    await asyncio.gather(*(limits_settle(counters, admission, ActualUsage(100, 100)) for admission in admitted))

    assert len(admitted) == 50
    assert {(error.status, error.code) for error in denied} == {(429, "budget_exceeded")}
    assert all(error.retry_after_s and error.retry_after_s > 0 for error in denied)
    usage = quota_usage_get(redis_cache, scope=ORG, period="d")
    assert usage["usd_used"] == 50 * COST.cost_micros
    assert usage["usd_held"] == 0


async def test_a_denied_request_counts_nothing_at_any_level(counters, redis_cache):
    tight_key = policy(
        LevelLimits(scope=ORG, requests_per_minute=100, tokens_per_day=10_000),
        LevelLimits(scope=KEY, tokens_per_day=300),
    )
    await limits_admit(counters, tight_key, COST, request_id="first")

    with pytest.raises(PolicyDenied) as denied:
        await limits_admit(counters, tight_key, COST, request_id="second")

    assert denied.value.code == "quota_exceeded"
    assert "key" in denied.value.message
    assert quota_usage_get(redis_cache, scope=ORG, period="d")["tok_held"] == 200  # the first request only
    assert quota_usage_get(redis_cache, scope=KEY, period="m")["tok_held"] == 0


async def test_requests_per_minute_answer_rate_limit_exceeded_with_headers(counters):
    limited = policy(LevelLimits(scope=KEY, requests_per_minute=3, tokens_per_minute=10_000))

    admissions = [await limits_admit(counters, limited, COST, request_id=f"r{index}") for index in range(3)]
    with pytest.raises(PolicyDenied) as denied:
        await limits_admit(counters, limited, COST, request_id="r4")

    headers = dict(admissions[0].headers)
    assert headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-remaining-requests"] == "2"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert headers["x-ratelimit-remaining-tokens"] == "9800"
    assert dict(admissions[2].headers)["x-ratelimit-remaining-requests"] == "0"
    assert denied.value.code == "rate_limit_exceeded"
    assert denied.value.status == 429
    assert ("retry-after", str(denied.value.retry_after_s)) in denied.value.headers


async def test_settling_gives_back_unused_tokens_of_the_minute(counters):
    limited = policy(LevelLimits(scope=KEY, tokens_per_minute=450))
    first = await limits_admit(counters, limited, COST, request_id="a")
    await limits_admit(counters, limited, COST, request_id="b")
    with pytest.raises(PolicyDenied):
        await limits_admit(counters, limited, COST, request_id="c")

    await limits_settle(counters, first, ActualUsage(prompt_tokens=20, completion_tokens=10))
    third = await limits_admit(counters, limited, COST, request_id="c")

    assert third.counted


async def test_concurrent_requests_are_limited_and_settle_frees_the_slot(counters):
    limited = policy(LevelLimits(scope=KEY, concurrent_requests=2))
    first = await limits_admit(counters, limited, COST, request_id="a")
    await limits_admit(counters, limited, COST, request_id="b")
    with pytest.raises(PolicyDenied) as denied:
        await limits_admit(counters, limited, COST, request_id="c")

    await limits_settle(counters, first, ActualUsage())
    await limits_settle(counters, first, ActualUsage())  # settling twice changes nothing
    await limits_admit(counters, limited, COST, request_id="c")

    assert denied.value.code == "rate_limit_exceeded"
    with pytest.raises(PolicyDenied):
        await limits_admit(counters, limited, COST, request_id="d")


async def test_settle_replaces_the_reservation_with_actual_tokens_and_money(counters, redis_cache):
    quota = policy(LevelLimits(scope=ORG, tokens_per_month=1_000_000, budget_per_month_micros=10**9))
    admission = await limits_admit(counters, quota, COST, request_id="a")
    held = quota_usage_get(redis_cache, scope=ORG, period="m")

    await limits_settle(counters, admission, ActualUsage(prompt_tokens=40, completion_tokens=2))

    settled = quota_usage_get(redis_cache, scope=ORG, period="m")
    assert held == {"tok_used": 0, "tok_held": 200, "usd_used": 0, "usd_held": 1000}
    assert settled == {"tok_used": 42, "tok_held": 0, "usd_used": 210, "usd_held": 0}


async def test_a_request_larger_than_a_limit_is_refused_without_retry_after(counters):
    small = policy(LevelLimits(scope=KEY, tokens_per_minute=150))

    with pytest.raises(PolicyDenied) as denied:
        await limits_admit(counters, small, COST, request_id="big")

    assert denied.value.code == "rate_limit_exceeded"
    assert denied.value.retry_after_s is None


async def test_a_refusal_by_a_token_or_money_limit_says_how_many_prompt_tokens_would_fit(counters):
    tokens = policy(LevelLimits(scope=KEY, tokens_per_day=150))
    money = policy(LevelLimits(scope=ORG, budget_per_day_micros=800))
    requests = policy(LevelLimits(scope=KEY, requests_per_minute=1))
    await limits_admit(counters, requests, COST, request_id="first")

    refusals = []
    for limited in (tokens, money, requests):
        with pytest.raises(LimitDenied) as denied:
            await limits_admit(counters, limited, COST, request_id="big")
        refusals.append(denied.value.prompt_tokens_room)
    exact = await limits_admit(
        counters, tokens, RequestCost(prompt_tokens=50, max_tokens=100), request_id="counted exactly"
    )

    # 150 tokens less 100 of answer; 800 micros less 500 of answer, at 5 micros a prompt token; a request limit: none.
    assert refusals == [50, 60, None]
    assert exact.counted
    with pytest.raises(LimitDenied) as full:
        await limits_admit(counters, tokens, RequestCost(prompt_tokens=1, max_tokens=1), request_id="after")
    assert full.value.prompt_tokens_room == -1  # nothing fits any more, not even the answer


async def test_a_policy_without_counted_limits_needs_no_redis():
    unreachable = RedisPipe(GatewayRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))

    admission = await limits_admit(unreachable, policy(), COST, request_id="a")
    await limits_settle(unreachable, admission, ActualUsage(1, 1))

    assert admission.counted is False
    unreachable.close()


async def test_it_fails_closed_when_redis_is_unreachable():
    unreachable = RedisPipe(GatewayRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))

    with pytest.raises(PolicyUnavailable) as unavailable:
        await limits_admit(unreachable, policy(LevelLimits(scope=KEY, requests_per_minute=5)), COST, request_id="a")

    assert unavailable.value.status == 503
    assert unavailable.value.code == "policy_unavailable"
    unreachable.close()


@override_settings(INFERIA_POLICY_FAIL_OPEN=True)
async def test_it_can_be_configured_to_fail_open():
    unreachable = RedisPipe(GatewayRedis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))

    admission = await limits_admit(
        unreachable, policy(LevelLimits(scope=KEY, requests_per_minute=5)), COST, request_id="a"
    )

    assert admission.counted is False
    unreachable.close()


def test_the_prompt_bound_is_at_least_the_utf8_length():
    body = {"messages": [{"role": "user", "content": "héllo 世界"}, {"role": "assistant", "content": "ok"}]}

    bound = prompt_tokens_upper_bound(body)

    assert bound >= len("héllo 世界".encode()) + len(b"ok")


@pytest.mark.django_db
def test_reconcile_rebuilds_counters_from_usage_records_after_redis_lost_them(org, org_key, redis_cache):
    from apps.policies.reconcile import policy_counters_reconcile
    from apps.policies.services import policy_create
    from apps.usage.models import UsageRecord

    policy_create(actor=None, organization=org, budget_per_month_micros=5_000, tokens_per_day=10_000)
    now = datetime.now(UTC)
    for index in range(3):
        UsageRecord.objects.create(
            request_id=f"req-{index}", started_at=now, organization=org, api_key=org_key, endpoint="chat.completions",
            model="m", prompt_tokens=100, completion_tokens=50, cost_micros=1_000, status_code=200, outcome="ok",
        )  # fmt: skip
    scope = f"{{o{org.pk}}}:o"
    redis_cache.flushdb()  # the counters database, not the broker's

    written = policy_counters_reconcile(client=redis_cache)

    assert written > 0
    assert quota_usage_get(redis_cache, scope=scope, period="m")["usd_used"] == 3_000
    assert quota_usage_get(redis_cache, scope=scope, period="d")["tok_used"] == 450
    # Never lowered: Redis may count usage that has not reached PostgreSQL yet.
    redis_cache.hset(f"inferia:lim:{scope}:m:{now:%Y%m}", "usd_used", 4_000)
    policy_counters_reconcile(client=redis_cache)
    assert quota_usage_get(redis_cache, scope=scope, period="m")["usd_used"] == 4_000


@pytest.mark.django_db
def test_after_a_failover_the_counters_are_rebuilt_at_once_and_only_once(org, org_key, redis_cache):
    from apps.policies.services import policy_create
    from apps.policies.tasks import policy_counters_failover_check
    from apps.usage.models import UsageRecord

    policy_create(actor=None, organization=org, tokens_per_day=10_000)
    UsageRecord.objects.create(
        request_id="before-failover", started_at=datetime.now(UTC), organization=org, api_key=org_key,
        endpoint="chat.completions", model="m", prompt_tokens=100, completion_tokens=50, status_code=200, outcome="ok",
    )  # fmt: skip
    scope = f"{{o{org.pk}}}:o"
    policy_counters_failover_check()  # the first check records the master it sees
    redis_cache.flushdb()  # a promoted replica that never got the counters,
    redis_cache.set("inferia:redis-epoch:policies", "the-old-master")  # and whose replication id is its own

    assert policy_counters_failover_check() > 0
    assert quota_usage_get(redis_cache, scope=scope, period="d")["tok_used"] == 150
    assert policy_counters_failover_check() == 0  # the same master: nothing to do


@pytest.mark.django_db(transaction=True)
async def test_after_reconcile_the_rebuilt_spend_still_limits(org, org_key, redis_cache, counters):
    from channels.db import database_sync_to_async

    from apps.policies.reconcile import policy_counters_reconcile
    from apps.usage.models import UsageRecord

    scope = f"{{o{org.pk}}}:o"
    await database_sync_to_async(UsageRecord.objects.create)(
        request_id="spent", started_at=datetime.now(UTC), organization=org, api_key=org_key, endpoint="completions",
        model="m", prompt_tokens=1, completion_tokens=1, cost_micros=4_500, status_code=200, outcome="ok",
    )  # fmt: skip
    await database_sync_to_async(__import__("apps.policies.models", fromlist=["Policy"]).Policy.objects.create)(
        organization=org, budget_per_day_micros=5_000
    )
    await database_sync_to_async(policy_counters_reconcile)(client=redis_cache)

    with pytest.raises(PolicyDenied) as denied:
        await limits_admit(
            counters, policy(LevelLimits(scope=scope, budget_per_day_micros=5_000)), COST, request_id="x"
        )

    assert denied.value.code == "budget_exceeded"


# --- the budget refusal speaks money ---------------------------------------------------------------------------------

TEAM = "{o1}:t3"
# A request priced at $1.00: 100 prompt and 100 output tokens at $5,000 per 1M tokens each.
DOLLAR = RequestCost(
    prompt_tokens=100,
    max_tokens=100,
    price_input_per_mtok_micros=5_000_000_000,
    price_output_per_mtok_micros=5_000_000_000,
)


async def test_a_budget_refusal_says_the_budget_and_the_spend_in_the_currency(counters, redis_cache):
    five_dollars = policy(LevelLimits(scope=TEAM, budget_per_day_micros=5_000_000))
    admitted = await limits_admit(counters, five_dollars, DOLLAR, request_id="first")
    await limits_settle(
        counters, admitted, ActualUsage(prompt_tokens=100, completion_tokens=100, cost_micros=5_010_000)
    )

    with pytest.raises(LimitDenied) as denied:
        await limits_admit(counters, five_dollars, DOLLAR, request_id="second")

    assert (denied.value.status, denied.value.code, denied.value.type) == (429, "budget_exceeded", "insufficient_quota")
    assert denied.value.message.startswith("Budget exceeded: team budget per day $5.00 (spent $5.01); retry in ")
    assert denied.value.retry_after_s is not None


async def test_a_budget_refusal_counts_what_requests_in_flight_hold(counters, redis_cache):
    two_dollars = policy(LevelLimits(scope=KEY, budget_per_month_micros=2_500_000))
    await limits_admit(counters, two_dollars, DOLLAR, request_id="first")
    await limits_admit(counters, two_dollars, DOLLAR, request_id="second")

    with pytest.raises(LimitDenied) as denied:
        await limits_admit(counters, two_dollars, DOLLAR, request_id="third")

    assert denied.value.message.startswith(
        "Budget exceeded: key budget per month $2.50 (spent $0.00, $2.00 held by requests in flight); retry in "
    )


async def test_a_budget_smaller_than_one_request_refuses_it_for_good_in_the_currency(counters, redis_cache):
    tiny = policy(LevelLimits(scope=TEAM, budget_per_day_micros=1))

    with pytest.raises(LimitDenied) as denied:
        await limits_admit(counters, tiny, COST, request_id="only")

    assert denied.value.message == (
        "Budget exceeded: team budget per day $0.000001 (spent $0.00); this request alone may cost up to $0.001: "
        "ask for fewer tokens (max_tokens)."
    )
    assert denied.value.retry_after_s is None
    assert quota_usage_get(redis_cache, scope=TEAM, period="d")["usd_held"] == 0


async def test_the_budget_refusal_uses_the_configured_currency(counters, redis_cache):
    with override_settings(INFERIA_CURRENCY="EUR"), pytest.raises(LimitDenied) as denied:
        await limits_admit(counters, policy(LevelLimits(scope=ORG, budget_per_day_micros=1)), COST, request_id="x")
    assert "organisation budget per day €0.000001" in denied.value.message
