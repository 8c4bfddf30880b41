"""A pool's `max_nodes` bounds what its deployments may ask for and what the worker starts (one node per replica)."""

from __future__ import annotations

from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.reconcile import deployment_autoscale_run, deployment_reconcile_run
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory

State = ModelDeployment.State
RState = Replica.State


def deployment_body(org, pool, **fields):
    return {
        "organization": org.pk,
        "pool": pool.pk,
        "name": "chat",
        "model_id": "org/model",
        "served_model_name": "chat",
    } | fields


def test_a_deployment_asking_for_more_replicas_than_the_pool_has_nodes_is_refused(org, owner, as_user):
    pool = ComputePoolFactory(organization=org, name="small", max_nodes=2)
    ModelDeploymentFactory(organization=org, pool=pool, name="other", desired_replicas=1, state=State.READY)

    response = as_user(owner).post(
        "/api/deployments/", deployment_body(org, pool, min_replicas=2, max_replicas=2), format="json"
    )

    assert response.status_code == 400
    assert "pool 'small' has 2 node(s) and other deployments claim 1: 1 replica(s) fit, not 2" in str(response.data)
    assert not ModelDeployment.objects.filter(served_model_name="chat").exists()
    assert not AuditEvent.objects.filter(action="deployment.create").exists()


def test_a_scale_up_past_the_pool_is_refused_and_changes_nothing(org, owner, as_user):
    pool = ComputePoolFactory(organization=org, name="small", max_nodes=3)
    ModelDeploymentFactory(
        organization=org, pool=pool, name="other", max_replicas=2, desired_replicas=2, state=State.READY
    )
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", min_replicas=1, max_replicas=4, desired_replicas=1, state=State.READY
    )

    refused = as_user(owner).post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 2}, format="json")
    fits = as_user(owner).post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 1}, format="json")

    assert refused.status_code == 400
    assert "1 replica(s) fit, not 2" in str(refused.data)
    assert fits.status_code == 200
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1
    assert not AuditEvent.objects.filter(action="deployment.scale", changes__desired_replicas__after=2).exists()


def test_a_stopped_deployment_cannot_start_while_others_hold_its_nodes(org, owner, as_user):
    pool = ComputePoolFactory(organization=org, name="small", max_nodes=1)
    ModelDeploymentFactory(organization=org, pool=pool, name="other", desired_replicas=1, state=State.READY)
    stopped = ModelDeploymentFactory(organization=org, pool=pool, name="chat", state=State.STOPPED)

    response = as_user(owner).post(f"/api/deployments/{stopped.pk}/start/", {}, format="json")

    assert response.status_code == 400
    assert "0 replica(s) fit, not 1" in str(response.data)
    assert ModelDeployment.objects.get(pk=stopped.pk).state == State.STOPPED


def test_a_shrinking_deployment_keeps_its_live_replicas_counted(org):
    pool = ComputePoolFactory(organization=org, max_nodes=2)
    shrinking = ModelDeploymentFactory(organization=org, pool=pool, name="old", desired_replicas=0, state=State.READY)
    ReplicaFactory(deployment=shrinking, state=RState.READY)
    ReplicaFactory(deployment=shrinking, state=RState.READY)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="new", desired_replicas=1, state=State.PENDING
    )

    plan = deployment_reconcile_run(deployment_id=deployment.pk)

    assert plan.provision == []  # both nodes are still held
    reasons = DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True)
    assert "pool full: 1 replica(s) to start, 0 of 2 node(s) free" in reasons


def test_the_worker_starts_only_as_many_replicas_as_the_pool_has_free_nodes(org):
    pool = ComputePoolFactory(organization=org, max_nodes=3)
    other = ModelDeploymentFactory(organization=org, pool=pool, name="other", state=State.READY)
    ReplicaFactory(deployment=other, state=RState.READY)
    # Asked for before the pool shrank to three nodes.
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", min_replicas=3, max_replicas=3, desired_replicas=3
    )

    first = deployment_reconcile_run(deployment_id=deployment.pk)
    again = deployment_reconcile_run(deployment_id=deployment.pk)

    assert len(first.provision) == 2
    assert Replica.objects.filter(deployment__pool=pool).exclude(state=RState.STOPPED).count() == 3
    reasons = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert reasons.count("pool full: 3 replica(s) to start, 2 of 3 node(s) free") == 1
    assert again.provision == [] or set(again.provision) <= set(first.provision)  # lost messages only, nothing new


def test_the_autoscaler_records_a_scale_up_the_pool_cannot_take_once(org, settings):
    settings.INFERIA_AUTOSCALE_WAITING_PER_REPLICA = 1
    pool = ComputePoolFactory(organization=org, name="small", max_nodes=1)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", min_replicas=1, max_replicas=3, desired_replicas=1, state=State.READY
    )
    ReplicaFactory(deployment=deployment, state=RState.READY, last_metrics={"waiting": 5.0})

    first = deployment_autoscale_run(deployment_id=deployment.pk)
    second = deployment_autoscale_run(deployment_id=deployment.pk)

    assert first is None
    assert second is None
    deployment.refresh_from_db()
    assert deployment.desired_replicas == 1
    events = DeploymentEvent.objects.filter(deployment=deployment, reason__startswith="autoscale up refused")
    assert events.count() == 1
    event = events.get()
    assert (event.from_state, event.to_state) == (State.READY, State.READY)
    assert "pool 'small' has 1 node(s)" in event.reason
    assert event.created_at <= timezone.now()
