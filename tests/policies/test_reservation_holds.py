"""Reservations of requests that are never settled (their web process died) are given back once due, exactly once,
whether the release or a late settle comes first."""

from __future__ import annotations

import asyncio
import time

import pytest
from django.conf import settings
from django.test import override_settings

from apps.policies.costs import ActualUsage, RequestCost
from apps.policies.effective import EffectivePolicy, LevelLimits
from apps.policies.limits import (
    holds_key,
    limits_admit,
    limits_holds_release,
    limits_settle,
    quota_usage_get,
)
from inferia_runtime.redis_clients import GatewayRedis
from inferia_runtime.redis_pipe import RedisPipe

ORG = "{o1}:o"
KEY = "{o1}:k7"
COST = RequestCost(
    prompt_tokens=100, max_tokens=100, price_input_per_mtok_micros=5_000_000, price_output_per_mtok_micros=5_000_000
)
# Far past any deadline: what the sweep sees when it runs long after the requests were admitted.
LATER_MS = int(time.time() * 1000) + 10 * 86_400_000


def policy(*levels: LevelLimits) -> EffectivePolicy:
    return EffectivePolicy(key_id=7, organization_id=1, team_id=None, levels=levels)


BUDGET = policy(
    LevelLimits(scope=ORG, budget_per_day_micros=10**9, tokens_per_month=10**9),
    LevelLimits(scope=KEY, tokens_per_day=10**9),
)


def held(redis_cache) -> tuple[int, int, int]:
    return (
        quota_usage_get(redis_cache, scope=ORG, period="d")["usd_held"],
        quota_usage_get(redis_cache, scope=ORG, period="m")["tok_held"],
        quota_usage_get(redis_cache, scope=KEY, period="d")["tok_held"],
    )


async def test_a_reservation_never_settled_is_given_back_once_it_is_due(counters, redis_cache):
    await limits_admit(counters, BUDGET, COST, request_id="orphan")

    not_yet = limits_holds_release(redis_cache, scope=ORG)
    before = held(redis_cache)
    released = limits_holds_release(redis_cache, scope=ORG, now_ms=LATER_MS)
    again = limits_holds_release(redis_cache, scope=ORG, now_ms=LATER_MS)

    assert (not_yet, before) == (0, (1000, 200, 200))
    assert released == 1
    assert held(redis_cache) == (0, 0, 0)
    assert again == 0
    assert redis_cache.zcard(holds_key(ORG)) == 0


async def test_the_deadline_is_a_setting(counters, redis_cache):
    with override_settings(INFERIA_POLICY_RESERVATION_TTL_S=0):
        await limits_admit(counters, BUDGET, COST, request_id="due-at-once")
    await limits_admit(counters, BUDGET, COST, request_id="due-in-an-hour")

    released = limits_holds_release(redis_cache, scope=KEY)  # any scope of the organisation names its holds

    assert released == 1
    assert held(redis_cache) == (1000, 200, 200)  # the second request's reservation only


async def test_a_late_settle_after_the_release_adds_the_usage_but_gives_back_nothing_more(counters, redis_cache):
    late = await limits_admit(counters, BUDGET, COST, request_id="slow")
    await limits_admit(counters, BUDGET, COST, request_id="running")
    limits_holds_release(redis_cache, scope=ORG, now_ms=int(time.time() * 1000) + 3_600_000 + 60_000)
    assert held(redis_cache) == (0, 0, 0)  # both were due

    await limits_admit(counters, BUDGET, COST, request_id="new")
    await limits_settle(counters, late, ActualUsage(prompt_tokens=40, completion_tokens=2))

    assert held(redis_cache) == (1000, 200, 200)  # the new request's reservation, untouched by the late settle
    day = quota_usage_get(redis_cache, scope=ORG, period="d")
    assert day["usd_used"] == 210
    assert quota_usage_get(redis_cache, scope=KEY, period="d")["tok_used"] == 42


async def test_a_settled_request_leaves_nothing_to_release(counters, redis_cache):
    admission = await limits_admit(counters, BUDGET, COST, request_id="done")

    await limits_settle(counters, admission, ActualUsage(prompt_tokens=40, completion_tokens=2))
    released = limits_holds_release(redis_cache, scope=ORG, now_ms=LATER_MS)

    assert released == 0
    assert held(redis_cache) == (0, 0, 0)
    assert quota_usage_get(redis_cache, scope=ORG, period="d")["usd_used"] == 210
    assert redis_cache.zcard(holds_key(ORG)) == 0


async def test_two_requests_with_the_same_id_hold_and_release_separately(counters, redis_cache):
    first = await limits_admit(counters, BUDGET, COST, request_id="same")
    await limits_admit(counters, BUDGET, COST, request_id="same")

    await limits_settle(counters, first, ActualUsage())

    assert held(redis_cache) == (1000, 200, 200)
    assert limits_holds_release(redis_cache, scope=ORG, now_ms=LATER_MS) == 1
    assert held(redis_cache) == (0, 0, 0)


async def test_a_policy_without_quotas_records_no_holds(counters, redis_cache):
    admission = await limits_admit(
        counters, policy(LevelLimits(scope=KEY, requests_per_minute=10, tokens_per_minute=10_000)), COST, request_id="a"
    )
    await limits_settle(counters, admission, ActualUsage(1, 1))

    assert redis_cache.exists(holds_key(KEY)) == 0


async def test_settles_racing_the_release_give_each_reservation_back_exactly_once(counters, redis_cache):
    kept = await limits_admit(counters, BUDGET, COST, request_id="kept")  # not due: must stay held throughout
    with override_settings(INFERIA_POLICY_RESERVATION_TTL_S=0):
        racing = await asyncio.gather(*(limits_admit(counters, BUDGET, COST, request_id=f"r{i}") for i in range(100)))

    sweeps = [asyncio.to_thread(limits_holds_release, redis_cache, scope=ORG, batch=7) for _ in range(3)]
    settles = [
        limits_settle(counters, admission, ActualUsage(prompt_tokens=10, completion_tokens=0)) for admission in racing
    ]
    results = await asyncio.gather(*sweeps, *settles)

    released = sum(results[:3])
    assert 0 <= released <= 100
    assert held(redis_cache) == (1000, 200, 200)  # only `kept`: nothing given back twice, nothing left behind
    assert quota_usage_get(redis_cache, scope=KEY, period="d")["tok_used"] == 100 * 10
    assert redis_cache.zcard(holds_key(ORG)) == 1
    await limits_settle(counters, kept, ActualUsage())
    assert held(redis_cache) == (0, 0, 0)


@pytest.mark.django_db
def test_the_reconciliation_task_releases_due_holds_of_organisations_with_quotas(org, redis_cache):
    from apps.policies.reconcile import policy_holds_release
    from apps.policies.services import policy_create
    from apps.policies.tasks import policy_counters_reconcile_periodic

    policy_create(actor=None, organization=org, tokens_per_day=10_000)
    scope = f"{{o{org.pk}}}:o"
    limits = EffectivePolicy(
        key_id=1, organization_id=org.pk, team_id=None, levels=(LevelLimits(scope=scope, tokens_per_day=10_000),)
    )

    async def admit_two() -> None:
        client = GatewayRedis.from_url(settings.CACHE_REDIS_URL)
        pipe = RedisPipe(client)
        with override_settings(INFERIA_POLICY_RESERVATION_TTL_S=0):
            await limits_admit(pipe, limits, COST, request_id="crashed")
        await limits_admit(pipe, limits, COST, request_id="running")
        pipe.close()
        await client.aclose()

    asyncio.run(admit_two())
    assert quota_usage_get(redis_cache, scope=scope, period="d")["tok_held"] == 400

    policy_counters_reconcile_periodic()

    assert quota_usage_get(redis_cache, scope=scope, period="d")["tok_held"] == 200
    assert policy_holds_release(client=redis_cache, now_ms=LATER_MS) == 1
    assert quota_usage_get(redis_cache, scope=scope, period="d")["tok_held"] == 0
