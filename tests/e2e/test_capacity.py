"""Capacity that is governed and priced, end to end: the real web process, Celery worker and beat of `inferia start
all`. A pool's `max_nodes` and a team's GPU quota refuse what would exceed them (asked through the REST API, or
by the autoscaler under load), cost-aware placement puts the overflow on another pool, and the GPUs' running time
accrues as cost at the price of the pool each replica runs on."""

from __future__ import annotations

import time

import pytest

from tests.e2e.test_self_healing import Api, Load, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

DOLLAR = 1_000_000
# 3.6 per GPU-hour is 1,000 micro-units per GPU-second: easy to check against the seconds counted.
DEAR = int(3.6 * DOLLAR)
CHEAP = int(1.8 * DOLLAR)


def _events(api: Api, deployment_id: int) -> list[str]:
    return [event["reason"] for event in api.get(f"/deployments/{deployment_id}/events/")]


def _gpu_costs(api: Api, deployment_id: int) -> dict:
    (row,) = api.get(f"/usage/gpu-costs/?deployment={deployment_id}&group_by=deployment")
    return row


def test_pool_and_quota_limits_hold_placement_overflows_and_gpu_time_is_priced(platform):
    api = Api(platform)
    # One request at a time per replica, slow tokens: concurrent requests queue, and the autoscaler wants more.
    sim = {"max_num_seqs": 1, "ttft_ms": 200, "itl_ms": 30}
    provider = api.post(
        "/providers/", {"organization": api.org, "name": "capacity", "kind": "simulator", "config": {"sim": sim}}
    )
    pool = lambda name, nodes, cost: api.post(  # noqa: E731
        "/pools/",
        {
            "organization": api.org,
            "provider": provider["id"],
            "name": name,
            "max_nodes": nodes,
            "cost_per_gpu_hour_micros": cost,
        },
    )
    dear, cheap = pool("capacity-dear", 1, DEAR), pool("capacity-cheap", 1, CHEAP)
    team = api.post("/teams/", {"organization": api.org, "name": "capacity-team"})
    api.post("/policies/", {"organization": api.org, "team": team["id"], "gpus_max": 2})
    deployment = api.post(
        "/deployments/",
        {
            "organization": api.org,
            "pool": dear["id"],
            "team": team["id"],
            "name": "capacity-chat",
            "model_id": "inferia/sim-model",
            "served_model_name": "capacity-chat",
            "engine": "inferia-sim",
            "min_replicas": 1,
            "max_replicas": 3,
            "desired_replicas": 1,
        },
    )
    path = f"/deployments/{deployment['id']}/"
    wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 1, timeout_s=60, what="1 READY replica")

    # The pool has one node: a second replica is refused by hand and by the autoscaler under load.
    refused = api.session.post(f"{api.base}{path}scale/", json={"replicas": 2}, timeout=30)
    assert refused.status_code == 400
    assert "pool 'capacity-dear' has 1 node(s)" in refused.text
    load = Load(platform.base_url, platform.key, "capacity-chat", threads=6, max_tokens=10).start()
    try:
        wait_for(
            lambda: any(r.startswith("autoscale up refused") for r in _events(api, deployment["id"])),
            timeout_s=40,
            what="the autoscaler's refusal recorded",
        )
        assert api.get(path)["desired_replicas"] == 1

        # A cheaper pool named for placement: the autoscaler's next replica goes there.
        placed = api.post(f"{path}placement/", {"placement_pools": [cheap["id"]]})
        assert placed["placement_pools"] == [cheap["id"]]
        wait_for(lambda: len(api.replicas(deployment["id"], "ready")) == 2, timeout_s=60, what="2 READY replicas")
        # Both stay for the cost check below, however idle the autoscaler then finds them.
        kept = api.session.patch(f"{api.base}{path}", json={"min_replicas": 2}, timeout=30)
        assert kept.status_code == 200, kept.text
    finally:
        load.stop()
    assert load.failed_before_streaming == []
    pools = sorted(replica["pool"] for replica in api.replicas(deployment["id"], "ready"))
    assert pools == sorted([dear["id"], cheap["id"]])

    # The team's quota is 2 GPUs: a third replica is refused even with room in a pool.
    api.session.patch(f"{api.base}/pools/{cheap['id']}/", json={"max_nodes": 4}, timeout=30).raise_for_status()
    over_quota = api.session.post(f"{api.base}{path}scale/", json={"replicas": 3}, timeout=30)
    assert over_quota.status_code == 400
    assert "team 'capacity-team''s GPU quota is 2" in over_quota.text

    # GPU time accrues while the replicas serve, each at its own pool's price.
    first = _gpu_costs(api, deployment["id"])
    time.sleep(3)
    later = _gpu_costs(api, deployment["id"])
    assert later["gpu_seconds"] > first["gpu_seconds"] > 0
    # Two replicas of one GPU each: 1,000 (dear) and 500 (cheap) micro-units a second, 750 a GPU-second on average
    # (a margin for the whole seconds the rows count in).
    grown = later["gpu_cost_micros"] - first["gpu_cost_micros"]
    gpu_seconds = later["gpu_seconds"] - first["gpu_seconds"]
    assert 600 * gpu_seconds - 2000 <= grown <= 900 * gpu_seconds + 2000
    assert later["team"] == team["id"]
    api.stop(deployment["id"])
