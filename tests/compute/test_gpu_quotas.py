"""GPU quotas of organisations and teams (kept in their policies) bound what deployments may ask for; a deployment is
charged to a team of its own organisation only."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute import inventory_services
from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.reconcile import deployment_autoscale_run
from apps.policies.models import Policy
from inferia_runtime.errors import DomainRefusal
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory, TeamFactory

State = ModelDeployment.State
TP2 = {"tensor_parallel_size": 2}


@pytest.fixture
def pool(org):
    return ComputePoolFactory(organization=org, name="gpus", max_nodes=32)


@pytest.fixture
def team(org):
    return TeamFactory(organization=org, name="Research")


def body(org, pool, **fields):
    return {
        "organization": org.pk,
        "pool": pool.pk,
        "name": "chat",
        "model_id": "org/m",
        "served_model_name": "chat",
    } | (fields)


def test_a_deployment_past_the_organisations_gpu_quota_is_refused(org, owner, pool, as_user):
    Policy.objects.create(organization=org, gpus_max=4)
    ModelDeploymentFactory(organization=org, pool=pool, name="big", engine_args=TP2, state=State.READY)

    refused = as_user(owner).post(
        "/api/deployments/", body(org, pool, engine_args=TP2, min_replicas=2, max_replicas=2), format="json"
    )
    fits = as_user(owner).post("/api/deployments/", body(org, pool, engine_args=TP2), format="json")

    assert refused.status_code == 400
    assert refused.data == [
        "the organisation's GPU quota is 4 and its other deployments use 2: 2 GPU(s) left, this deployment asks for "
        "2 replica(s) x 2 GPU(s) = 4"
    ]
    assert fits.status_code == 201, fits.data
    assert ModelDeployment.objects.filter(served_model_name="chat").count() == 1
    assert AuditEvent.objects.filter(action="deployment.create").count() == 1


def test_a_scale_up_past_the_teams_quota_is_refused_while_other_teams_do_not_count(org, owner, pool, team, as_user):
    Policy.objects.create(organization=org, team=team, gpus_max=2)
    ModelDeploymentFactory(organization=org, pool=pool, name="elsewhere", max_replicas=4, desired_replicas=4)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", team=team, min_replicas=1, max_replicas=4, state=State.READY
    )
    client = as_user(owner)

    to_two = client.post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 2}, format="json")
    to_three = client.post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 3}, format="json")

    assert to_two.status_code == 200, to_two.data
    assert to_three.status_code == 400
    assert "team 'Research''s GPU quota is 2 and its other deployments use 0: 2 GPU(s) left" in str(to_three.data)
    assert ModelDeployment.objects.get(pk=deployment.pk).desired_replicas == 2


def test_more_gpus_per_replica_is_checked_like_more_replicas(org, owner, pool, as_user):
    Policy.objects.create(organization=org, gpus_max=2)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", engine="vllm", max_replicas=2, desired_replicas=2
    )

    response = as_user(owner).patch(f"/api/deployments/{deployment.pk}/", {"engine_args": TP2}, format="json")

    assert response.status_code == 400
    assert "asks for 2 replica(s) x 2 GPU(s) = 4" in str(response.data)
    assert ModelDeployment.objects.get(pk=deployment.pk).engine_args == {}


def test_live_replicas_of_a_shrinking_deployment_still_count(org, pool):
    Policy.objects.create(organization=org, gpus_max=2)
    shrinking = ModelDeploymentFactory(organization=org, pool=pool, name="old", desired_replicas=0, state=State.READY)
    ReplicaFactory(deployment=shrinking, state=Replica.State.READY)
    ReplicaFactory(deployment=shrinking, state=Replica.State.READY)

    with pytest.raises(DomainRefusal, match="its other deployments use 2: 0 GPU"):
        inventory_services.deployment_create(
            organization=org, pool=pool, actor=None, name="new", model_id="org/m", served_model_name="new"
        )


def test_the_autoscaler_records_a_scale_up_past_the_quota(org, pool, settings):
    settings.INFERIA_AUTOSCALE_WAITING_PER_REPLICA = 1
    Policy.objects.create(organization=org, gpus_max=1)
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", min_replicas=1, max_replicas=2, state=State.READY
    )
    ReplicaFactory(deployment=deployment, state=Replica.State.READY, last_metrics={"waiting": 3.0})

    assert deployment_autoscale_run(deployment_id=deployment.pk) is None

    reasons = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("reason", flat=True))
    assert any(r.startswith("autoscale up refused: the organisation's GPU quota is 1") for r in reasons)


def test_a_team_of_another_organisation_cannot_be_charged(org, other_org, owner, pool, team, as_user):
    foreign = TeamFactory(organization=other_org, name="Theirs")
    deployment = ModelDeploymentFactory(organization=org, pool=pool, name="chat", team=team)
    client = as_user(owner)

    created = client.post("/api/deployments/", body(org, pool, served_model_name="x", team=foreign.pk), format="json")
    moved = client.patch(f"/api/deployments/{deployment.pk}/", {"team": foreign.pk}, format="json")
    own = client.patch(f"/api/deployments/{deployment.pk}/", {"team": None}, format="json")

    assert created.status_code == 400
    assert "team" in created.data
    assert moved.status_code == 400
    assert own.status_code == 200
    assert own.data["team"] is None
    with pytest.raises(DomainRefusal, match="the team belongs to another organisation"):
        inventory_services.deployment_create(
            organization=org, pool=pool, actor=None, name="y", model_id="org/m", served_model_name="y", team=foreign
        )
    assert not ModelDeployment.objects.filter(served_model_name__in=["x", "y"]).exists()


def test_gpu_quotas_are_set_through_the_api_audited_and_not_on_keys(org, owner, team, as_user):
    client = as_user(owner)

    created = client.post("/api/policies/", {"organization": org.pk, "team": team.pk, "gpus_max": 8}, format="json")
    changed = client.patch(f"/api/policies/{created.data['id']}/", {"gpus_max": 6}, format="json")
    negative = client.patch(f"/api/policies/{created.data['id']}/", {"gpus_max": -1}, format="json")

    assert created.status_code == 201, created.data
    assert changed.data["gpus_max"] == 6
    assert negative.status_code == 400
    assert Policy.objects.get(team=team).gpus_max == 6
    update = AuditEvent.objects.get(action="policy.update")
    assert update.changes["gpus_max"] == {"before": 8, "after": 6}
