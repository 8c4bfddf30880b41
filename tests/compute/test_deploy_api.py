"""Deploying through the REST API (create, scale, stop, start, events) and nodes that push heartbeats."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.compute.adapters import ReplicaPhase
from apps.compute.health import Probe, replica_health_apply, replicas_health_check
from apps.compute.models import DeploymentEvent, ModelDeployment, Provider, Replica
from apps.compute.node_tokens import node_token, node_token_hash
from apps.compute.routing import REPLICA_LOAD_KEY
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory, ReplicaFactory

State = ModelDeployment.State
RState = Replica.State


@pytest.fixture
def sim_pool(org):
    return ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=4)


def deployment_body(org, pool, **fields):
    return {
        "organization": org.pk,
        "pool": pool.pk,
        "name": "chat",
        "model_id": "org/model",
        "served_model_name": "chat",
        **fields,
    }


def test_an_owner_deploys_a_model_with_two_replicas(org, owner, sim_pool, as_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = as_user(owner).post(
            "/api/deployments/", deployment_body(org, sim_pool, min_replicas=2, max_replicas=2), format="json"
        )

    assert response.status_code == 201, response.data
    assert response.data["desired_replicas"] == 2
    assert response.data["state"] == "pending"
    assert any("deployment_create" in callback.__qualname__ for callback in callbacks)  # the reconcile, after commit


def test_engine_arguments_vllm_would_refuse_are_a_400(org, owner, sim_pool, as_user):
    body = deployment_body(org, sim_pool, engine_args={"tensor_parallel_size": 0})

    response = as_user(owner).post("/api/deployments/", body, format="json")

    assert response.status_code == 400
    assert "tensor_parallel_size" in str(response.data)


def test_an_external_provider_on_a_private_address_is_refused(org, owner, as_user, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    body = {"organization": org.pk, "name": "ext", "kind": "external", "config": {"base_urls": ["http://10.0.0.5"]}}

    response = as_user(owner).post("/api/providers/", body, format="json")

    assert response.status_code == 400
    assert not Provider.objects.filter(name="ext").exists()


def test_a_provider_kind_without_an_adapter_is_refused(org, owner, as_user):
    # Akash is spec-only (its SDL is validated, but deployments need a wallet-signed transaction).
    body = {"organization": org.pk, "name": "akash", "kind": "akash"}

    response = as_user(owner).post("/api/providers/", body, format="json")

    assert response.status_code == 400


def test_scaling_stays_within_min_and_max_and_is_audited(org, owner, sim_pool, as_user):
    client = as_user(owner)
    created = client.post(
        "/api/deployments/", deployment_body(org, sim_pool, min_replicas=1, max_replicas=3), format="json"
    ).data
    url = f"/api/deployments/{created['id']}/"

    scaled = client.post(f"{url}scale/", {"replicas": 3, "reason": "launch day"}, format="json")
    too_many = client.post(f"{url}scale/", {"replicas": 4}, format="json")

    assert scaled.status_code == 200
    assert scaled.data["desired_replicas"] == 3
    assert too_many.status_code == 400
    from apps.audit.models import AuditEvent

    event = AuditEvent.objects.get(action="deployment.scale")
    assert event.changes["desired_replicas"] == {"before": 1, "after": 3}


def test_stop_and_start_are_recorded_transitions(org, owner, sim_pool, as_user):
    client = as_user(owner)
    created = client.post("/api/deployments/", deployment_body(org, sim_pool), format="json").data
    url = f"/api/deployments/{created['id']}/"

    stopped = client.post(f"{url}stop/", {"reason": "maintenance"}, format="json")
    restart_too_early = client.post(f"{url}start/", {}, format="json")
    ModelDeployment.objects.filter(pk=created["id"]).update(state=State.STOPPED)
    restarted = client.post(f"{url}start/", {"reason": "back"}, format="json")
    events = client.get(f"{url}events/").data

    assert stopped.data["state"] == "stopping"
    assert restart_too_early.status_code == 400
    assert restarted.data["state"] == "pending"
    assert [(e["to_state"], e["reason"]) for e in events] == [("pending", "back"), ("stopping", "maintenance")]


def test_a_deployment_with_live_replicas_cannot_be_deleted(org, owner, sim_pool, as_user):
    deployment = ModelDeploymentFactory(organization=org, pool=sim_pool, name="d", model_id="m")
    ReplicaFactory(deployment=deployment, state=RState.READY, endpoint="http://127.0.0.1:9")

    response = as_user(owner).delete(f"/api/deployments/{deployment.pk}/")

    assert response.status_code == 400
    assert ModelDeployment.objects.filter(pk=deployment.pk).exists()


def test_an_outsider_cannot_scale_or_stop_anothers_deployment(org, owner, outsider, sim_pool, as_user):
    deployment = ModelDeploymentFactory(organization=org, pool=sim_pool, name="d", model_id="m")

    scale = as_user(outsider).post(f"/api/deployments/{deployment.pk}/scale/", {"replicas": 1}, format="json")
    stop = as_user(outsider).post(f"/api/deployments/{deployment.pk}/stop/", {}, format="json")

    assert scale.status_code == 404
    assert stop.status_code == 404
    assert not DeploymentEvent.objects.filter(deployment=deployment).exists()


# --- nodes that call home ---


@pytest.fixture
def nat_replica(org, settings):
    """A READY replica on an external provider whose endpoint cannot be polled (behind NAT), with its node token."""
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    provider = ProviderFactory(
        organization=org, name="nat", kind="external", config={"base_urls": ["http://127.0.0.1:9"]}
    )
    pool = ComputePoolFactory(organization=org, provider=provider, name="nat-pool")
    replica = ReplicaFactory(
        deployment=ModelDeploymentFactory(organization=org, pool=pool, name="n", model_id="m"),
        state=RState.STARTING,
        endpoint="http://127.0.0.1:9",
        provider_handle={"base_url": "http://127.0.0.1:9"},
    )
    token = node_token(replica)
    Replica.objects.filter(pk=replica.pk).update(node_token_hash=node_token_hash(token))
    replica.refresh_from_db()
    return replica, token


def heartbeat(token, body):
    client = APIClient()
    return client.post("/api/nodes/heartbeat", body, format="json", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_node_pushing_ready_becomes_ready_and_its_load_reaches_the_router(nat_replica, redis_cache):
    replica, token = nat_replica

    response = heartbeat(token, {"state": "ready", "metrics": {"num_requests_running": 2, "num_requests_waiting": 5}})

    assert response.status_code == 200, response.data
    assert response.data == {"replica": replica.pk, "state": "ready"}
    replica.refresh_from_db()
    assert replica.last_pushed_at is not None
    assert replica.last_metrics["waiting"] == 5.0
    assert redis_cache.hget(REPLICA_LOAD_KEY.format(replica_id=replica.pk), "waiting") == b"5.0"


def test_a_wrong_or_retired_node_token_is_a_401(nat_replica, org):
    replica, token = nat_replica
    user_key_like = heartbeat("sk-inf-" + "x" * 40, {"state": "ready"})
    forged = heartbeat(token[:-1] + ("0" if token[-1] != "0" else "1"), {"state": "ready"})
    Replica.objects.filter(pk=replica.pk).update(state=RState.STOPPED)
    retired = heartbeat(token, {"state": "ready"})

    assert user_key_like.status_code == 401
    assert forged.status_code == 401
    assert retired.status_code == 401


def test_bad_metrics_in_a_heartbeat_are_a_400(nat_replica):
    _replica, token = nat_replica

    response = heartbeat(token, {"state": "ready", "metrics": {"running": -1}})

    assert response.status_code == 400


def test_a_fresh_push_keeps_an_unpollable_replica_healthy_and_a_stale_one_does_not(nat_replica, settings):
    settings.INFERIA_HEALTH_FAILURES = 1
    replica, token = nat_replica
    heartbeat(token, {"state": "ready"})

    replicas_health_check()  # the poll fails (nothing listens), the push is fresh
    replica.refresh_from_db()
    assert replica.state == RState.READY

    Replica.objects.filter(pk=replica.pk).update(last_pushed_at=timezone.now() - timedelta(seconds=60))
    replicas_health_check()
    replica.refresh_from_db()
    assert replica.state == RState.UNHEALTHY


def test_a_node_reporting_failure_is_failed_for_replacement(nat_replica):
    replica, token = nat_replica

    response = heartbeat(token, {"state": "failed"})

    assert response.data["state"] == "failed"
    assert Replica.objects.get(pk=replica.pk).last_error == "the node reported failure"


def test_a_probe_never_overwrites_a_replica_stopped_meanwhile(nat_replica):
    replica, _token = nat_replica
    Replica.objects.filter(pk=replica.pk).update(state=RState.STOPPING)

    outcome = replica_health_apply(replica=replica, probe=Probe(ReplicaPhase.READY))

    assert outcome == "healthy"
    assert Replica.objects.get(pk=replica.pk).state == RState.STOPPING
