"""Cost-aware placement: a deployment names several pools; new replicas go to the cheapest with room, a provider's
refusal moves a replica to the next pool, scaling down stops the most expensive replicas first, and GPU time is
priced at the pool a replica runs on."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.compute.adapters.process import process_replicas_stop_all
from apps.compute.health import replicas_health_check
from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.placement import deployment_placement_set
from apps.compute.reconcile import deployment_reconcile_run
from apps.compute.replica_states import replica_transition
from apps.compute.tasks import replica_provision
from apps.usage.models import GpuUsageSpan
from tests.factories import (
    ComputePoolFactory,
    ModelDeploymentFactory,
    OrganizationFactory,
    ProviderFactory,
    ReplicaFactory,
)
from tests.kit.waiting import eventually

State = ModelDeployment.State
RState = Replica.State
DOLLAR = 1_000_000


@pytest.fixture
def pools(org):
    """Three simulator pools of `org`: the deployment's own (the dearest) and two cheaper ones."""
    provider = ProviderFactory(organization=org, name="sim")
    return {
        "own": ComputePoolFactory(
            organization=org, provider=provider, name="own", max_nodes=4, cost_per_gpu_hour_micros=4 * DOLLAR
        ),
        "cheap": ComputePoolFactory(
            organization=org, provider=provider, name="cheap", max_nodes=1, cost_per_gpu_hour_micros=1 * DOLLAR
        ),
        "mid": ComputePoolFactory(
            organization=org, provider=provider, name="mid", max_nodes=1, cost_per_gpu_hour_micros=2 * DOLLAR
        ),
    }


def placed(org, pools, owner, **fields):
    fields.setdefault("desired_replicas", 3)
    fields.setdefault("max_replicas", 4)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pools["own"], name="chat", model_id="inferia/sim-model", engine="inferia-sim", **fields
    )
    return deployment_placement_set(deployment=deployment, pools=[pools["cheap"], pools["mid"]], actor=owner)


def replica_pools(deployment):
    return sorted(
        deployment.replicas.exclude(state=RState.STOPPED).values_list("pool__name", flat=True),
    )


def test_new_replicas_fill_the_cheapest_pools_first(org, owner, pools):
    deployment = placed(org, pools, owner)

    plan = deployment_reconcile_run(deployment_id=deployment.pk)

    assert len(plan.provision) == 3
    assert replica_pools(deployment) == ["cheap", "mid", "own"]


def test_without_placement_pools_every_replica_runs_on_the_deployments_pool(org, pools):
    deployment = ModelDeploymentFactory(
        organization=org, pool=pools["own"], name="solo", desired_replicas=2, max_replicas=2
    )

    deployment_reconcile_run(deployment_id=deployment.pk)

    assert replica_pools(deployment) == ["own", "own"]


def test_scaling_down_drains_the_replicas_on_the_dearest_pools_first(org, owner, pools):
    deployment = placed(org, pools, owner)
    deployment_reconcile_run(deployment_id=deployment.pk)
    Replica.objects.filter(deployment=deployment).update(state=RState.READY)

    ModelDeployment.objects.filter(pk=deployment.pk).update(desired_replicas=1)
    plan = deployment_reconcile_run(deployment_id=deployment.pk)

    assert plan.teardown == []  # serving replicas drain first: their streams finish
    states = dict(deployment.replicas.values_list("pool__name", "state"))
    assert states == {"cheap": RState.READY, "mid": RState.DRAINING, "own": RState.DRAINING}


def test_an_ask_is_checked_against_the_nodes_of_every_pool(org, owner, pools, as_user):
    deployment = placed(org, pools, owner, desired_replicas=1, max_replicas=8, state=State.READY)
    client = as_user(owner)

    fits = client.post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 6}, format="json")
    refused = client.post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 7}, format="json")

    assert fits.status_code == 200, fits.data
    assert refused.status_code == 400
    assert "pools 'cheap', 'mid', 'own' have 6 node(s) and other deployments claim 0: 6 replica(s) fit, not 7" in str(
        refused.data
    )


def test_a_pool_held_by_another_deployment_is_skipped(org, owner, pools):
    other = ModelDeploymentFactory(organization=org, pool=pools["cheap"], name="other", state=State.READY)
    ReplicaFactory(deployment=other, state=RState.READY)
    deployment = placed(org, pools, owner, desired_replicas=2)

    deployment_reconcile_run(deployment_id=deployment.pk)

    assert replica_pools(deployment) == ["mid", "own"]


def test_when_every_pool_is_full_the_shortfall_is_recorded_once(org, owner, pools):
    deployment = placed(org, pools, owner, desired_replicas=4, max_replicas=8)
    ComputePoolFactory._meta.model.objects.filter(pk=pools["own"].pk).update(max_nodes=1)

    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment_reconcile_run(deployment_id=deployment.pk)

    assert replica_pools(deployment) == ["cheap", "mid", "own"]
    reasons = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert reasons.count("pools full: 4 replica(s) to start, 3 node(s) free on cheap, mid, own") == 1


def test_a_provider_that_refuses_moves_the_replica_to_the_next_pool_and_it_serves_there(org, owner, pools):
    refusing = ProviderFactory(organization=org, name="out-of-gpus", config={"sim": {"no_such_option": 1}})
    ComputePoolFactory._meta.model.objects.filter(pk=pools["cheap"].pk).update(provider=refusing)
    deployment = placed(org, pools, owner, desired_replicas=1)
    try:
        (replica_id,) = deployment_reconcile_run(deployment_id=deployment.pk).provision
        assert Replica.objects.get(pk=replica_id).pool == pools["cheap"]

        replica_provision(replica_id)  # refused on the cheap pool: moved, for a new provisioning task

        replica = Replica.objects.get(pk=replica_id)
        assert (replica.state, replica.pool, replica.pools_refused) == (
            RState.PENDING,
            pools["mid"],
            [pools["cheap"].pk],
        )
        deployment.refresh_from_db()
        assert deployment.state != State.FAILED  # a refusal another pool takes over fails nothing
        reasons = DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True)
        assert any("pool 'cheap' refused replica" in r and "trying pool 'mid'" in r for r in reasons)

        replica_provision(replica_id)

        def ready():
            replicas_health_check()
            return Replica.objects.get(pk=replica_id).state == RState.READY

        eventually(ready, timeout=20, interval=0.3, what="the moved replica to serve")
    finally:
        process_replicas_stop_all()


def test_a_refusal_with_no_other_pool_left_fails_as_before(org, owner, pools):
    refusing = ProviderFactory(organization=org, name="misconfigured", config={"sim": {"no_such_option": 1}})
    for name in ("own", "cheap", "mid"):
        ComputePoolFactory._meta.model.objects.filter(pk=pools[name].pk).update(provider=refusing)
    deployment = placed(org, pools, owner, desired_replicas=1)
    (replica_id,) = deployment_reconcile_run(deployment_id=deployment.pk).provision

    for _ in range(3):
        replica_provision(replica_id)

    replica = Replica.objects.get(pk=replica_id)
    assert replica.state == RState.FAILED
    assert sorted(replica.pools_refused) == sorted([pools["cheap"].pk, pools["mid"].pk])
    deployment.refresh_from_db()
    assert deployment.state == State.FAILED
    assert "unknown simulator option" in deployment.state_reason


def test_gpu_time_is_priced_at_the_pool_the_replica_runs_on(org, owner, pools):
    deployment = placed(org, pools, owner, desired_replicas=2)
    deployment_reconcile_run(deployment_id=deployment.pk)

    deployment.replicas.update(state=RState.STARTING)
    for replica in deployment.replicas.all():
        replica_transition(replica=replica, to_state=RState.READY)

    prices = sorted(
        GpuUsageSpan.objects.filter(deployment_id=deployment.pk).values_list("cost_per_gpu_hour_micros", flat=True)
    )
    assert prices == [1 * DOLLAR, 2 * DOLLAR]


def test_placement_pools_are_set_through_the_api_and_audited(org, owner, pools, as_user):
    deployment = ModelDeploymentFactory(organization=org, pool=pools["own"], name="chat")

    response = as_user(owner).post(
        f"/api/deployments/{deployment.pk}/placement/",
        {"placement_pools": [pools["mid"].pk, pools["cheap"].pk]},
        format="json",
    )

    assert response.status_code == 200, response.data
    assert sorted(response.data["placement_pools"]) == sorted([pools["mid"].pk, pools["cheap"].pk])
    event = AuditEvent.objects.get(action="deployment.placement")
    assert event.changes["placement_pools"]["after"] == sorted([pools["mid"].pk, pools["cheap"].pk])


def test_another_organisations_pool_reads_as_missing(org, owner, pools, as_user):
    theirs = ComputePoolFactory(organization=OrganizationFactory(name="Other"), name="theirs")
    deployment = ModelDeploymentFactory(organization=org, pool=pools["own"], name="chat")

    response = as_user(owner).post(
        f"/api/deployments/{deployment.pk}/placement/", {"placement_pools": [theirs.pk]}, format="json"
    )

    assert response.status_code == 400
    assert "does not exist" in str(response.data)
    assert not deployment.placement_pools.exists()


@pytest.mark.parametrize(
    ("pool_fields", "message"),
    [
        ({"gpus_per_node": 1}, "needs 2 GPU(s) per node of type H100"),
        ({"gpus_per_node": 8, "gpu_type": "A10G"}, "needs 2 GPU(s) per node of type H100"),
    ],
)
def test_a_pool_a_replica_does_not_fit_is_refused(org, owner, pools, pool_fields, message):
    pools["own"].gpu_type, pools["own"].gpus_per_node = "H100", 2
    pools["own"].save()
    deployment = ModelDeploymentFactory(
        organization=org, pool=pools["own"], name="big", engine_args={"tensor_parallel_size": 2}
    )
    small = ComputePoolFactory(organization=org, name="small", **pool_fields)

    from inferia_runtime.errors import DomainRefusal

    with pytest.raises(DomainRefusal, match=re.escape(message)):
        deployment_placement_set(deployment=deployment, pools=[small], actor=owner)
    assert not deployment.placement_pools.exists()


def test_a_pool_in_use_for_placement_cannot_be_deleted(org, owner, pools, as_user):
    placed(org, pools, owner)

    response = as_user(owner).delete(f"/api/pools/{pools['mid'].pk}/")

    assert response.status_code == 400
    assert "deployments still use this pool: chat" in str(response.data)
