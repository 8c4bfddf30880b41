"""The router on its own: the less loaded of two replicas by the engines' reported load (as the health checker
stores it in Redis), prefix-aware and session affinity, and the circuit breaker."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from apps.compute.routing import REPLICA_LOAD_KEY, replica_load_store, replica_loads_read
from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.prefix_index import PREFIX_MAX_CHUNKS, PrefixIndex, PrefixMatch, prefix_hashes, prompt_text
from apps.gateway.router import AFFINITY_SLACK, PREFIX_SLACK, Router, session_slot
from apps.gateway.schemas import ChatCompletionRequest
from tests.kit.waiting import eventually, eventually_async


def replica(replica_id: int, **load: float) -> ReplicaTarget:
    return ReplicaTarget(id=replica_id, deployment_id=1, urls={}, **load)


def route_of(*replicas: ReplicaTarget) -> DeploymentRoute:
    return DeploymentRoute(
        id=1, organization_id=1, served_model_name="m", created=0, price_input_per_mtok_micros=0,
        price_output_per_mtok_micros=0, timeout=aiohttp.ClientTimeout(), first_byte_timeout_s=5, replicas=replicas,
    )  # fmt: skip


def picks(router: Router, route: DeploymentRoute, count: int = 20, **kwargs) -> set[int]:
    chosen = set()
    for _ in range(count):
        replica = router.choose(route, **kwargs)
        assert replica is not None
        chosen.add(replica.id)
    return chosen


def test_it_prefers_the_replica_with_fewer_outstanding_requests():
    router = Router()
    busy, idle = replica(1), replica(2)
    route = route_of(busy, idle)
    router.started(busy)

    assert picks(router, route) == {2}
    router.finished(busy)
    assert picks(router, route) == {1, 2}  # ties spread


def test_it_prefers_the_replica_whose_engine_reports_less_load(redis_cache):
    """Load as the health checker stores it, read back the way the runtime's refresher reads it."""
    from apps.gateway.runtime import GatewayRuntime

    loaded, light = replica(11), replica(12)
    replica_load_store(replica_id=11, running=30, waiting=6, kv_cache=0.9)
    replica_load_store(replica_id=12, running=2, waiting=0, kv_cache=0.1)

    async def checked() -> bool:
        return light.checked_at != 0

    async def refreshed() -> None:
        runtime = GatewayRuntime(asyncio.get_running_loop())
        try:
            runtime.catalog.current = type("Catalog", (), {"replicas": {11: loaded, 12: light}})()  # type: ignore[assignment]
            await eventually_async(checked, timeout=3, what="the load refreshed")
        finally:
            await runtime.close()

    asyncio.run(refreshed())
    assert (loaded.waiting, loaded.kv_cache, light.waiting) == (6, 0.9, 0)
    assert redis_cache.ttl(REPLICA_LOAD_KEY.format(replica_id=11)) > 0
    assert picks(Router(), route_of(loaded, light)) == {12}


def test_the_loads_of_many_replicas_come_back_in_order_with_gaps_for_unknown_ones(redis_cache):
    import redis.asyncio as aioredis
    from django.conf import settings

    for replica_id in range(1001, 2001, 2):
        replica_load_store(replica_id=replica_id, running=replica_id, waiting=1, kv_cache=0.25, checked_at=5.5)

    async def read() -> list:
        client = aioredis.Redis.from_url(settings.CACHE_REDIS_URL)
        try:
            return await replica_loads_read(client=client, replica_ids=[*range(1000, 2001), 7])
        finally:
            await client.aclose()

    loads = asyncio.run(read())
    assert len(loads) == 1002
    assert loads[0] is None
    assert loads[-1] is None
    assert loads[1] == (1001.0, 1.0, 0.25, 5.5)
    assert loads[999] == (1999.0, 1.0, 0.25, 5.5)
    assert sum(load is None for load in loads) == 502


def test_a_full_kv_cache_outweighs_a_few_requests_in_flight():
    router = Router()
    full, free = replica(1, kv_cache=1.0), replica(2)
    router.started(free)
    router.started(free)
    assert picks(router, route_of(full, free)) == {2}


def test_a_session_sticks_to_one_replica_until_it_is_much_busier():
    router = Router()
    replicas = [replica(index) for index in range(1, 5)]
    route = route_of(*replicas)
    sticky = picks(router, route, session="conversation-42")
    assert len(sticky) == 1
    (chosen_id,) = sticky
    assert picks(Router(), route, session="conversation-42") == sticky  # the same in another process

    chosen = next(target for target in replicas if target.id == chosen_id)
    for _ in range(int(AFFINITY_SLACK) + 1):
        router.started(chosen)
    assert chosen_id not in picks(router, route, session="conversation-42")


def test_sessions_spread_over_replicas():
    route = route_of(*(replica(index) for index in range(1, 5)))
    chosen = {Router().choose(route, session=f"user-{n}").id for n in range(100)}  # type: ignore[union-attr]
    assert chosen == {1, 2, 3, 4}


def test_repeated_failures_open_the_breaker_until_a_health_check_passes(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 3
    settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS = 60
    router = Router()
    flaky, healthy = replica(1), replica(2)
    route = route_of(flaky, healthy)

    router.failed(flaky)
    router.failed(flaky)
    assert not router.is_open(1)
    router.failed(flaky)
    assert router.is_open(1)
    assert picks(router, route) == {2}

    flaky.checked_at = time.time() + 1  # the health checker saw it healthy after the breaker opened
    assert picks(router, route) == {1, 2}
    assert 1 not in router.breakers


def test_a_success_closes_the_breaker(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 2
    router = Router()
    flaky = replica(1)
    router.failed(flaky)
    router.succeeded(flaky)
    router.failed(flaky)
    assert not router.is_open(1)


def test_after_the_cooldown_one_probe_is_let_through(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 1
    settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS = 0.05
    router = Router()
    flaky, healthy = replica(1), replica(2)
    route = route_of(flaky, healthy)
    router.failed(flaky)
    assert picks(router, route) == {2}

    # The cool-down is on the monotonic clock (time-machine does not move it): wait for it to pass, not a guess past it.
    eventually(lambda: not router.is_open(1), timeout=1.0, interval=0.01, what="the cool-down over")
    probes = [router.choose(route).id for _ in range(10)]  # type: ignore[union-attr]
    assert probes.count(1) == 1  # half-open: one probe, the rest kept away until it answers


def test_every_replica_tried_or_broken_means_none():
    router = Router()
    route = route_of(replica(1), replica(2))
    assert router.choose(route, tried=(1, 2)) is None
    assert router.choose(route_of()) is None


@pytest.mark.parametrize("count", [1, 3])
def test_tried_replicas_are_skipped(count):
    router = Router()
    route = route_of(*(replica(index) for index in range(1, count + 2)))
    assert router.choose(route, tried=tuple(range(1, count + 1))).id == count + 1  # type: ignore[union-attr]


def many(count: int) -> tuple[ReplicaTarget, ...]:
    return tuple(replica(index) for index in range(1, count + 1))


def test_two_choices_spread_load_over_many_replicas():
    """Requests that stay in flight spread evenly: the less loaded of two random replicas keeps the busiest close to
    the mean (one random pick each would leave some replicas with several times the mean)."""
    router = Router()
    route = route_of(*many(100))
    for _ in range(1000):
        router.started(router.choose(route))  # type: ignore[arg-type]
    loads = sorted(router.inflight.get(target.id, 0) for target in route.replicas)
    assert loads[-1] <= 14  # mean 10; uniform random picks reach about 20 here
    assert loads[0] >= 1  # an idle replica wins whenever it is drawn


def test_two_choices_prefer_the_replica_the_engine_reports_idle():
    router = Router()
    replicas = [replica(index, waiting=10) for index in range(1, 10)] + [replica(10)]
    route = route_of(*replicas)
    chosen = [router.choose(route).id for _ in range(500)]  # type: ignore[union-attr]
    # Whenever the idle one is one of the two drawn (about 2 draws in 10), it wins; never a loaded one over it.
    assert 60 < chosen.count(10) < 160


def test_many_replicas_with_broken_breakers_are_avoided(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 1
    settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS = 60
    router = Router()
    route = route_of(*many(50))
    for target in route.replicas[:45]:
        router.failed(target)
    assert picks(router, route, count=200) <= {46, 47, 48, 49, 50}
    assert picks(router, route, count=200, session="conversation-42") <= {46, 47, 48, 49, 50}


def test_a_session_keeps_its_replica_among_many_and_moves_only_when_it_fails(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 1
    settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS = 60
    router = Router()
    route = route_of(*many(1000))
    for target in route.replicas[::2]:
        router.started(target)  # some load everywhere, less than the slack
    (sticky,) = picks(router, route, count=50, session="conversation-7")
    assert picks(Router(), route, count=5, session="conversation-7") == {sticky}  # the same in another process

    preferred = next(target for target in route.replicas if target.id == sticky)
    router.failed(preferred)
    moved = picks(router, route, count=50, session="conversation-7")
    assert sticky not in moved
    assert len(moved) > 1  # no second favourite: the session falls back to the two choices


def test_sessions_mostly_keep_their_replica_when_one_is_added():
    sessions = [f"user-{n}" for n in range(2000)]
    before = [session_slot(session, 10) for session in sessions]
    after = [session_slot(session, 11) for session in sessions]
    moved = sum(1 for old, new in zip(before, after, strict=True) if old != new)
    assert all(new == 10 for old, new in zip(before, after, strict=True) if old != new)  # only to the new one
    assert 100 < moved < 300  # about 1/11 of them


@pytest.mark.parametrize("count", [2, 10, 300])
def test_retries_reach_every_replica_when_the_others_fail(count):
    """A request retried after each failure (the gateway passes `tried`) gets to every replica before giving up, even
    when random draws keep hitting the ones already tried."""
    router = Router()
    route = route_of(*many(count))
    tried: tuple[int, ...] = ()
    for _ in range(count):
        chosen = router.choose(route, tried=tried, session="conversation-1")
        assert chosen is not None
        assert chosen.id not in tried
        tried = (*tried, chosen.id)
    assert sorted(tried) == list(range(1, count + 1))
    assert router.choose(route, tried=tried) is None


def conversation(turns: int, *, topic: str = "ships") -> ChatCompletionRequest:
    messages = [{"role": "system", "content": f"You are a patient expert on {topic}. " * 40}]
    for turn in range(turns):
        messages += [
            {"role": "user", "content": f"Question {turn} about {topic}, asked at some length. " * 8},
            {"role": "assistant", "content": f"Answer {turn}, which goes on for a while as answers do. " * 8},
        ]
    messages.append({"role": "user", "content": "One more question?"})
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages})


def prefix_of(route: DeploymentRoute, request: ChatCompletionRequest) -> tuple[int, ...]:
    return prefix_hashes(prompt_text(request), seed=route.prefix_seed)


def test_the_next_turn_of_a_conversation_goes_where_its_prefix_went():
    router = Router()
    route = route_of(*many(8))
    first = router.choose(route, prefix=prefix_of(route, conversation(1)))
    assert first is not None
    for turns in range(2, 6):
        assert router.choose(route, prefix=prefix_of(route, conversation(turns))).id == first.id  # type: ignore[union-attr]


def test_conversations_with_their_own_prefixes_spread_over_replicas():
    router = Router()
    route = route_of(*many(8))
    homes = []
    for n in range(80):
        chosen = router.choose(route, prefix=prefix_of(route, conversation(1, topic=f"t{n}")))
        router.started(chosen)  # type: ignore[arg-type]
        homes.append(chosen.id)  # type: ignore[union-attr]
    assert max(homes.count(replica_id) for replica_id in range(1, 9)) <= 14  # mean 10: by load, as without a prefix


def test_a_prefix_holder_much_busier_than_the_others_gives_way_and_the_prefix_moves():
    router = Router()
    route = route_of(*many(4))
    prefix = prefix_of(route, conversation(2))
    holder = router.choose(route, prefix=prefix)
    assert holder is not None
    for _ in range(int(PREFIX_SLACK)):
        router.started(holder)
    assert router.choose(route, prefix=prefix) is holder  # within the slack: the cache is worth the wait

    router.started(holder)
    moved = router.choose(route, prefix=prefix)
    assert moved is not holder
    router.finished(holder)
    assert router.choose(route, prefix=prefix) is moved  # remembered where it went


def test_a_broken_or_tried_prefix_holder_is_skipped(settings):
    settings.INFERIA_CIRCUIT_FAILURES = 1
    settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS = 60
    router = Router()
    route = route_of(*many(4))
    prefix = prefix_of(route, conversation(2))
    holder = router.choose(route, prefix=prefix)
    assert holder is not None
    retry = router.choose(route, prefix=prefix, tried=(holder.id,))
    assert retry is not None
    assert retry is not holder
    router.failed(retry)
    assert router.choose(route, prefix=prefix, tried=(holder.id,)) not in (holder, retry, None)


def test_prompt_hashing_is_bounded_and_keyed_by_deployment():
    huge = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x" * 10**6}]})
    assert len(prefix_hashes(prompt_text(huge), seed=1)) == PREFIX_MAX_CHUNKS
    request = conversation(1)
    assert set(prefix_hashes(prompt_text(request), seed=1)).isdisjoint(prefix_hashes(prompt_text(request), seed=2))
    short = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "Hi"}]})
    assert prefix_hashes(prompt_text(short), seed=1) == ()


def test_the_prefix_index_forgets_its_oldest_entries_beyond_its_bound():
    index = PrefixIndex(max_entries=10)
    index.record(tuple(range(8)), 1)
    index.record(tuple(range(100, 108)), 2)
    assert len(index) == 10
    assert index.longest_match(tuple(range(8))) == PrefixMatch()  # the first six went, chain broken at the start
    assert index.longest_match(tuple(range(100, 108))) == PrefixMatch(holders=(2,), depth=8)


def test_the_prefix_index_remembers_a_few_holders_of_a_shared_prefix_most_recent_last():
    index = PrefixIndex()
    shared = (1, 2, 3)
    for replica_id in range(1, 12):
        index.record((*shared, 100 + replica_id), replica_id, matched=3 if replica_id > 1 else 0)
    index.record((*shared, 999), 5, matched=3)  # again: moves to the end, not twice in the list
    assert index.longest_match((*shared, 1000)) == PrefixMatch(holders=(4, 6, 7, 8, 9, 10, 11, 5), depth=3, shared=True)
    assert index.longest_match((*shared, 107, 1000)) == PrefixMatch(holders=(7,), depth=4)  # its own: not shared


def test_a_conversation_continuing_is_not_a_shared_prefix_until_it_branches():
    index = PrefixIndex()
    index.record((1, 2), 1)
    assert index.longest_match((1, 2, 3)).shared is False  # the next turn: its own history
    index.record((1, 2, 3), 1, matched=2, known=2)
    assert index.longest_match((1, 2, 3, 4)).shared is False
    assert index.longest_match((1, 2, 9)).shared is True  # the same history, gone on differently: a branch point


def test_new_conversations_sharing_instructions_spread_over_the_replicas():
    """A prefix every conversation shares is worth one cold prefill per replica, not a pile of conversations on the
    replica that served it first: even on an idle deployment (every request done before the next), new conversations
    spread, and each one's next turn still finds its own replica."""
    router = Router()
    route = route_of(*many(8))
    instructions = "You are the support assistant of a shipping company. " * 40

    def request_of(n: int, turns: int) -> ChatCompletionRequest:
        messages = [{"role": "system", "content": instructions}]
        for turn in range(turns):
            messages += [{"role": "user", "content": f"Customer {n} asks about parcel {n}, turn {turn}. " * 8},
                         {"role": "assistant", "content": f"Parcel {n} is on its way, turn {turn}. " * 8}]  # fmt: skip
        messages.append({"role": "user", "content": f"Customer {n} asks about parcel {n}, turn {turns}. " * 8})
        return ChatCompletionRequest.model_validate({"model": "m", "messages": messages})

    homes = {}
    for n in range(200):
        homes[n] = router.choose(route, prefix=prefix_of(route, request_of(n, 0))).id  # type: ignore[union-attr]
    counts = [list(homes.values()).count(replica_id) for replica_id in range(1, 9)]
    # Idle, the two choices tie and pick at random: 33 on the busiest on average, never near all 200 on one.
    assert max(counts) <= 2 * 25
    for n in range(0, 200, 10):
        assert router.choose(route, prefix=prefix_of(route, request_of(n, 1))).id == homes[n]  # type: ignore[union-attr]
