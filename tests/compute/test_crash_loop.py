"""A deployment whose replicas keep failing backs off like Kubernetes' CrashLoopBackOff, then goes FAILED with the
last error, instead of replacing them at once for ever.

The reconciler runs for real against PostgreSQL; time moves with time-machine. Replicas are failed by hand here
(the health checker's write); tests/e2e/test_crash_loop.py runs an engine that always fails under the real worker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.urls import reverse

from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.reconcile import deployment_reconcile_run, replica_backoff_seconds
from apps.compute.services import deployment_start
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory

State = ModelDeployment.State
RState = Replica.State
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _documented_defaults(settings):
    settings.INFERIA_REPLICA_BACKOFF_SECONDS = 10.0
    settings.INFERIA_REPLICA_BACKOFF_MAX_SECONDS = 300.0
    settings.INFERIA_DEPLOYMENT_FAILURE_RESET_SECONDS = 600.0
    settings.INFERIA_DEPLOYMENT_MAX_FAILURES = 5
    settings.INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT = 10


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def deployment(org):
    pool = ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=4)
    return ModelDeploymentFactory(organization=org, pool=pool, name="chat", model_id="m", engine="inferia-sim")


def reconcile(deployment):
    plan = deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    return plan


def fail_the_live_replica(deployment, error="engine exited: CUDA out of memory"):
    """What the health checker writes when a replica's engine is gone."""
    live = deployment.replicas.filter(state__in=(RState.PENDING, RState.STARTING, RState.READY))
    assert live.update(state=RState.FAILED, last_error=error) == 1


def test_the_delay_doubles_from_ten_seconds_to_five_minutes_after_a_first_immediate_replacement():
    delays = [replica_backoff_seconds(failures) for failures in range(1, 10)]

    assert delays == [0, 10, 20, 40, 80, 160, 300, 300, 300]


def test_a_second_failure_in_a_row_is_replaced_only_after_the_back_off(deployment, clock):
    reconcile(deployment)
    fail_the_live_replica(deployment)
    first = reconcile(deployment)
    assert len(first.provision) == 1  # a first failure is replaced at once: self-healing stays quick

    fail_the_live_replica(deployment)
    second = reconcile(deployment)
    clock.shift(9)
    still_waiting = reconcile(deployment)
    clock.shift(1.5)
    after = reconcile(deployment)

    assert second.provision == []
    assert still_waiting.provision == []
    assert len(after.provision) == 1
    assert deployment.consecutive_failures == 2
    assert deployment.replace_after == START + timedelta(seconds=10)
    assert deployment.last_error == "engine exited: CUDA out of memory"
    assert deployment.state == State.PROVISIONING


def test_each_failure_in_a_row_waits_twice_as_long(deployment, clock, settings):
    settings.INFERIA_DEPLOYMENT_MAX_FAILURES = 100
    reconcile(deployment)
    waits = []
    for _ in range(8):
        fail_the_live_replica(deployment)
        failed_at = datetime.now(UTC)
        at_once = reconcile(deployment).provision
        waits.append((deployment.replace_after - failed_at).total_seconds())
        clock.move_to(deployment.replace_after + timedelta(seconds=0.1))
        assert len(at_once + reconcile(deployment).provision) == 1

    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]


def test_the_count_starts_afresh_once_the_deployment_served_for_the_reset_window(deployment, clock):
    reconcile(deployment)
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=State.READY,
        state_changed_at=START,
        consecutive_failures=4,
        last_failure_at=START,
        replace_after=START + timedelta(seconds=80),
    )
    deployment.replicas.update(state=RState.READY)
    clock.shift(601)

    fail_the_live_replica(deployment)
    plan = reconcile(deployment)

    assert deployment.consecutive_failures == 1  # not 5: it had served steadily for ten minutes
    assert len(plan.provision) == 1
    assert deployment.state == State.DEGRADED


def test_a_failure_soon_after_serving_keeps_counting(deployment, clock):
    reconcile(deployment)
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        state=State.READY, state_changed_at=START, consecutive_failures=2, last_failure_at=START
    )
    deployment.replicas.update(state=RState.READY)
    clock.shift(300)

    fail_the_live_replica(deployment)
    plan = reconcile(deployment)

    assert deployment.consecutive_failures == 3
    assert plan.provision == []


def crash_loop(deployment, clock, failures):
    reconcile(deployment)
    for number in range(1, failures + 1):
        fail_the_live_replica(deployment, error=f"process exited: attempt {number} failed")
        reconcile(deployment)
        if deployment.replace_after:
            clock.move_to(deployment.replace_after + timedelta(seconds=0.1))
        reconcile(deployment)


def test_after_the_maximum_failures_in_a_row_the_deployment_fails_with_the_last_error(deployment, clock):
    crash_loop(deployment, clock, 5)

    assert deployment.state == State.FAILED
    assert (
        deployment.state_reason == "gave up after 5 replica failures in a row; last: process exited: attempt 5 failed"
    )
    assert deployment.replicas.filter(state__in=(RState.PENDING, RState.STARTING)).count() == 0
    assert deployment.replicas.count() == 5  # one row per attempt, no churn
    clock.shift(3600)
    assert reconcile(deployment).provision == []  # it waits for a person
    event = DeploymentEvent.objects.filter(deployment=deployment).latest("id")
    assert (event.from_state, event.to_state) == (State.PROVISIONING, State.FAILED)


def test_a_deployment_that_fails_while_ready_moves_through_degraded(deployment, clock):
    crash_loop(deployment, clock, 4)
    deployment.replicas.filter(state=RState.PENDING).update(state=RState.READY)
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=State.READY)

    fail_the_live_replica(deployment)
    reconcile(deployment)

    assert deployment.state == State.FAILED
    transitions = list(deployment.events.order_by("-id").values_list("from_state", "to_state")[:2])
    assert transitions == [(State.DEGRADED, State.FAILED), (State.READY, State.DEGRADED)]


def test_a_deployment_still_serving_on_other_replicas_keeps_retrying_at_the_capped_delay(deployment, clock):
    ModelDeployment.objects.filter(pk=deployment.pk).update(min_replicas=2, max_replicas=2, desired_replicas=2)
    reconcile(deployment)
    serving, _crashing = deployment.replicas.order_by("pk")
    Replica.objects.filter(pk=serving.pk).update(state=RState.READY)
    for _ in range(7):
        assert Replica.objects.filter(deployment=deployment, state=RState.PENDING).update(state=RState.FAILED) == 1
        reconcile(deployment)
        clock.move_to(deployment.replace_after + timedelta(seconds=0.1))
        reconcile(deployment)

    assert deployment.consecutive_failures == 7
    assert deployment.state == State.DEGRADED  # FAILED would take the serving replica out of routing
    assert deployment.replicas.filter(state=RState.PENDING).count() == 1


def test_starting_a_failed_deployment_again_forgets_the_crash_loop(deployment, clock):
    crash_loop(deployment, clock, 5)

    deployment_start(deployment=deployment, actor=None, reason="fixed the engine")
    plan = reconcile(deployment)

    assert deployment.consecutive_failures == 0
    assert deployment.replace_after is None
    assert len(plan.provision) == 1


def test_stopped_replica_rows_are_bounded_per_deployment(deployment, settings):
    settings.INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT = 3
    old = [ReplicaFactory(deployment=deployment, state=RState.STOPPED, last_error=f"e{i}") for i in range(8)]

    reconcile(deployment)

    kept = list(deployment.replicas.filter(state=RState.STOPPED).values_list("last_error", flat=True))
    assert kept == ["e5", "e6", "e7"]
    assert Replica.objects.filter(pk__in=[r.pk for r in old]).count() == 3


def test_the_rest_api_and_console_show_why_it_failed(deployment, clock, owner, as_user):
    crash_loop(deployment, clock, 5)
    client = as_user(owner)

    api = client.get(f"/api/deployments/{deployment.pk}/").json()
    page = client.get(reverse("console:deployment-detail", args=[deployment.pk]))

    assert api["state"] == "failed"
    assert api["consecutive_failures"] == 5
    assert api["last_error"] == "process exited: attempt 5 failed"
    assert "gave up after 5 replica failures in a row" in api["state_reason"]
    assert page.status_code == 200
    assert b"process exited: attempt 5 failed" in page.content
    assert b'data-testid="deployment-last-error"' in page.content
