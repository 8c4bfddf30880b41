"""The router on its own: least outstanding requests weighted by the engines' reported load (as the health checker
stores it in Redis), session affinity, and the circuit breaker."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from apps.compute.routing import REPLICA_LOAD_KEY, replica_load_store
from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.router import AFFINITY_SLACK, Router
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
