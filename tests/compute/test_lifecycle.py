"""Replica lifecycle on the worker: reconcile, provision, health checks, self-healing, stop, autoscaling.

Real inferia-sim processes started by the simulator adapter, real PostgreSQL and Redis; the tasks' bodies are called
directly here (tests/e2e/test_self_healing.py runs them in a real Celery worker and beat).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import psutil
import pytest
from django.utils import timezone

from apps.compute.adapters import adapter_for
from apps.compute.adapters.process import REPLICA_ENV, process_replicas_stop_all, replica_key, replicas_dir
from apps.compute.health import engine_load_parse, replicas_health_check
from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.reconcile import deployment_autoscale_run, deployment_reconcile_run
from apps.compute.replicas import PROVISION_LEASE_S, replica_teardown_run
from apps.compute.routing import REPLICA_LOAD_KEY
from apps.compute.services import deployment_stop
from apps.compute.tasks import replica_provision
from inferia_runtime.redis_clients import sync_redis
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory, ReplicaFactory
from tests.kit.waiting import eventually

State = ModelDeployment.State
RState = Replica.State


@pytest.fixture
def sim_deployment(org):
    """A simulator deployment of `org` wanting `replicas`; every replica process is stopped afterwards."""

    def make(replicas=1, *, min_replicas=None, max_replicas=None, sim=None):
        provider = ProviderFactory(organization=org, name="sim", config={"sim": sim or {}})
        return ModelDeploymentFactory(
            organization=org,
            pool=ComputePoolFactory(organization=org, provider=provider, name="sim-pool", max_nodes=8),
            name="chat",
            model_id="inferia/sim-model",
            engine="inferia-sim",
            min_replicas=replicas if min_replicas is None else min_replicas,
            max_replicas=replicas if max_replicas is None else max_replicas,
            desired_replicas=replicas,
        )

    yield make
    process_replicas_stop_all()


def marked_processes(replica):
    """Live processes carrying the replica's marker: what "one process per replica" counts."""
    key = replica_key(replica)
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(REPLICA_ENV) == key and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def check_until(condition, *, timeout_s=15.0):
    """Run the health checker until `condition()` holds; fails after `timeout_s`."""

    def checked() -> bool:
        replicas_health_check()
        return condition()

    eventually(checked, timeout=timeout_s, interval=0.3, what="the health-checked condition")


def provision_ready(deployment):
    """Reconcile, provision every replica, health-check until all are READY, reconcile again."""
    plan = deployment_reconcile_run(deployment_id=deployment.pk)
    for replica_id in plan.provision:
        replica_provision(replica_id)
    check_until(lambda: deployment.replicas.filter(state=RState.READY).count() == deployment.desired_replicas)
    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    return list(deployment.replicas.filter(state=RState.READY))


def test_a_deployment_of_two_is_provisioned_once_per_replica_and_becomes_ready(sim_deployment, redis_cache):
    deployment = sim_deployment(2)

    plan = deployment_reconcile_run(deployment_id=deployment.pk)
    again = deployment_reconcile_run(deployment_id=deployment.pk)
    for replica_id in plan.provision * 2:  # each message delivered twice: the claim lets one run through
        replica_provision(replica_id)

    assert len(plan.provision) == 2
    assert again.provision == []  # the second reconcile sees the two it created
    check_until(lambda: deployment.replicas.filter(state=RState.READY).count() == 2)
    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.state == State.READY
    for replica in deployment.replicas.all():
        assert len(marked_processes(replica)) == 1
        assert replica.endpoint.startswith("http://127.0.0.1:")
        assert set(replica.last_metrics) >= {"running", "waiting", "kv_cache"}
        assert redis_cache.hget(REPLICA_LOAD_KEY.format(replica_id=replica.pk), "checked_at")
        assert len(replica.node_token_hash) == 64
    transitions = list(DeploymentEvent.objects.filter(deployment=deployment).values_list("from_state", "to_state"))
    assert transitions == [(State.PENDING, State.PROVISIONING), (State.PROVISIONING, State.READY)]


def test_a_provision_killed_half_way_and_run_again_leaves_one_process(sim_deployment):
    deployment = sim_deployment(1)
    replica_id = deployment_reconcile_run(deployment_id=deployment.pk).provision[0]
    replica = Replica.objects.get(pk=replica_id)
    # A worker claimed it, started the engine, and died before writing the pidfile or the database.
    Replica.objects.filter(pk=replica_id).update(
        state=RState.PROVISIONING, claimed_at=timezone.now() - timedelta(seconds=PROVISION_LEASE_S + 1)
    )
    adapter_for(deployment.pool.provider).provision(replica)
    (replicas_dir() / f"{replica_key(replica)}.json").unlink()
    # Until the child has exec'd with its marker.
    orphan = eventually(lambda: marked_processes(replica), what="the engine's marked process")[0]

    replica_provision(replica_id)  # the message, redelivered once the dead worker's lease expired

    replica.refresh_from_db()
    assert replica.state == RState.STARTING
    processes = marked_processes(replica)
    assert len(processes) == 1
    assert replica.provider_handle["pid"] == processes[0].pid
    assert not orphan.is_running() or orphan.status() == psutil.STATUS_ZOMBIE  # the orphan was found and killed
    assert replica.endpoint.endswith(f":{replica.provider_handle['port']}")


def test_a_provision_claimed_by_a_live_worker_is_not_taken_over(sim_deployment):
    deployment = sim_deployment(1)
    replica_id = deployment_reconcile_run(deployment_id=deployment.pk).provision[0]
    Replica.objects.filter(pk=replica_id).update(state=RState.PROVISIONING, claimed_at=timezone.now())

    replica_provision(replica_id)

    replica = Replica.objects.get(pk=replica_id)
    assert replica.state == RState.PROVISIONING
    assert marked_processes(replica) == []


@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_one_replica_start_one_process(org, sim_deployment):
    deployment = sim_deployment(1)
    replica_id = deployment_reconcile_run(deployment_id=deployment.pk).provision[0]
    errors = []

    def run():
        try:
            replica_provision(replica_id)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            from django.db import connection

            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    replica = Replica.objects.get(pk=replica_id)
    assert replica.state == RState.STARTING
    assert len(marked_processes(replica)) == 1
    assert len(list(replicas_dir().glob(f"{replica_key(replica)}.json"))) == 1


def test_a_killed_replica_fails_leaves_routing_and_is_replaced(sim_deployment):
    deployment = sim_deployment(2)
    victim, survivor = provision_ready(deployment)
    os.killpg(victim.provider_handle["pid"], signal.SIGKILL)

    check_until(lambda: Replica.objects.get(pk=victim.pk).state == RState.FAILED, timeout_s=5)
    plan = deployment_reconcile_run(deployment_id=deployment.pk)

    victim.refresh_from_db()
    deployment.refresh_from_db()
    assert "exited" in victim.last_error
    assert victim.state == RState.STOPPING
    assert victim.pk in plan.teardown
    assert len(plan.provision) == 1
    assert deployment.state == State.DEGRADED
    assert "replacing 1 failed" in deployment.state_reason
    for replica_id in plan.teardown:
        replica_teardown_run(replica_id=replica_id)
    replica_provision(plan.provision[0])
    check_until(lambda: deployment.replicas.filter(state=RState.READY).count() == 2)
    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.state == State.READY
    assert Replica.objects.get(pk=victim.pk).state == RState.STOPPED
    assert Replica.objects.get(pk=survivor.pk).state == RState.READY


def test_a_replica_that_stops_answering_becomes_unhealthy_and_recovers(sim_deployment, settings):
    settings.INFERIA_HEALTH_FAILURES = 2
    deployment = sim_deployment(1)
    (replica,) = provision_ready(deployment)
    frozen = psutil.Process(replica.provider_handle["pid"])
    frozen.suspend()  # alive but not answering: what a hung engine or a lost network looks like
    try:
        check_until(lambda: Replica.objects.get(pk=replica.pk).state == RState.UNHEALTHY, timeout_s=20)
        deployment_reconcile_run(deployment_id=deployment.pk)
        deployment.refresh_from_db()
        assert deployment.state == State.DEGRADED
        assert "missed 2 health checks" in Replica.objects.get(pk=replica.pk).last_error
    finally:
        frozen.resume()

    check_until(lambda: Replica.objects.get(pk=replica.pk).state == RState.READY, timeout_s=10)
    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    assert deployment.state == State.READY
    assert deployment.replicas.count() == 1  # recovered, not replaced


def test_stopping_a_deployment_tears_every_replica_down(sim_deployment):
    deployment = sim_deployment(2)
    replicas = provision_ready(deployment)

    deployment_stop(deployment=deployment, actor=None, reason="test")
    plan = deployment_reconcile_run(deployment_id=deployment.pk)
    for replica_id in plan.teardown:
        replica_teardown_run(replica_id=replica_id)
    deployment_reconcile_run(deployment_id=deployment.pk)

    deployment.refresh_from_db()
    assert sorted(plan.teardown) == sorted(r.pk for r in replicas)
    assert deployment.state == State.STOPPED
    assert all(marked_processes(replica) == [] for replica in replicas)
    assert not list(replicas_dir().glob(f"{replica_key(replicas[0])}.*"))


def test_an_unusable_provider_fails_the_deployment_with_the_reason(org):
    provider = ProviderFactory(organization=org, name="bad", config={"sim": {"nope": 1}})
    pool = ComputePoolFactory(organization=org, provider=provider, name="bad-pool")
    deployment = ModelDeploymentFactory(organization=org, pool=pool, name="d", model_id="m", engine="inferia-sim")

    plan = deployment_reconcile_run(deployment_id=deployment.pk)
    replica_provision(plan.provision[0])

    deployment.refresh_from_db()
    assert deployment.state == State.FAILED
    assert "unknown simulator option" in deployment.state_reason
    assert Replica.objects.get(pk=plan.provision[0]).state == RState.FAILED
    assert deployment_reconcile_run(deployment_id=deployment.pk).provision == []  # no crash loop


def _ready_with_load(deployment, count, *, waiting=0.0, kv=0.0):
    Replica.objects.filter(deployment=deployment).delete()
    for _ in range(count):
        ReplicaFactory(
            deployment=deployment,
            state=RState.READY,
            endpoint="http://127.0.0.1:9",
            last_metrics={"running": 1.0, "waiting": waiting, "kv_cache": kv},
        )


def test_the_autoscaler_adds_a_replica_when_requests_queue_and_waits_for_its_cool_down(sim_deployment, settings):
    settings.INFERIA_AUTOSCALE_WAITING_PER_REPLICA = 2
    settings.INFERIA_AUTOSCALE_UP_COOLDOWN_SECONDS = 30
    deployment = sim_deployment(1, min_replicas=1, max_replicas=3)
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=State.READY)
    _ready_with_load(deployment, 1, waiting=5)

    decision = deployment_autoscale_run(deployment_id=deployment.pk)
    _ready_with_load(deployment, 2, waiting=8)
    cooling = deployment_autoscale_run(deployment_id=deployment.pk)

    assert decision is not None
    assert (decision.current, decision.target) == (1, 2)
    assert "5 waiting" in decision.reason
    assert cooling is None  # within the cool-down
    assert ModelDeployment.objects.get(pk=deployment.pk).desired_replicas == 2
    from apps.audit.models import AuditEvent

    assert AuditEvent.objects.filter(action="deployment.scale", actor_label="system").exists()


def test_the_autoscaler_scales_on_kv_cache_use_and_down_when_idle_after_the_cool_down(sim_deployment, settings):
    settings.INFERIA_AUTOSCALE_KV_HIGH = 0.8
    settings.INFERIA_AUTOSCALE_DOWN_COOLDOWN_SECONDS = 60
    deployment = sim_deployment(1, min_replicas=1, max_replicas=2)
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=State.READY)
    _ready_with_load(deployment, 1, kv=0.9)

    up = deployment_autoscale_run(deployment_id=deployment.pk)
    _ready_with_load(deployment, 2)
    too_soon = deployment_autoscale_run(deployment_id=deployment.pk)
    ModelDeployment.objects.filter(pk=deployment.pk).update(last_scaled_at=timezone.now() - timedelta(seconds=61))
    down = deployment_autoscale_run(deployment_id=deployment.pk)
    at_min = deployment_autoscale_run(deployment_id=deployment.pk)

    assert up is not None
    assert up.target == 2
    assert too_soon is None
    assert down is not None
    assert (down.current, down.target) == (2, 1)
    assert at_min is None  # never below min_replicas


def test_vllm_metrics_are_read_by_their_names_including_the_older_kv_cache_gauge():
    text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{model_name="a"} 3.0\n'
        'vllm:num_requests_running{model_name="b"} 1.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{model_name="a"} 7.0\n'
        "# TYPE vllm:gpu_cache_usage_perc gauge\n"
        'vllm:gpu_cache_usage_perc{model_name="a"} 0.42\n'
    )

    load = engine_load_parse(text)

    assert (load.running, load.waiting, load.kv_cache) == (4.0, 7.0, 0.42)


def test_scraped_load_reaches_redis_for_the_router(sim_deployment, redis_cache):
    deployment = sim_deployment(1)
    (replica,) = provision_ready(deployment)

    stored = redis_cache.hgetall(REPLICA_LOAD_KEY.format(replica_id=replica.pk))

    assert set(stored) == {b"running", b"waiting", b"kv_cache", b"checked_at"}
    assert abs(float(stored[b"checked_at"]) - time.time()) < 10
    sync_redis().delete(REPLICA_LOAD_KEY.format(replica_id=replica.pk))
