"""Rolling updates, step by step: the reconciler's moves on real rows (the health checker's READY is written by hand
here; tests/e2e/test_rollout.py runs the whole thing with a worker, inferia-sim replicas and streaming load)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.compute.engine import EngineArgsError, image_reference_check
from apps.compute.inventory_services import deployment_update
from apps.compute.models import ModelDeployment, Provider, Replica
from apps.compute.reconcile import deployment_reconcile_run
from apps.compute.rollout import (
    deployment_rollout_pause,
    deployment_rollout_resume,
    deployment_rollout_rollback,
    rollout_progress,
)
from inferia_runtime.errors import DomainRefusal
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ReplicaFactory

RState = Replica.State
Rollout = ModelDeployment.RolloutState
DIGEST = "sha256:" + "a" * 64


@pytest.fixture
def serving(org):
    """A READY deployment of two READY replicas on the spec it has (as the reconciler leaves it)."""
    pool = ComputePoolFactory(organization=org, max_nodes=8)  # room for the rollouts' surge
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", min_replicas=2, max_replicas=2, desired_replicas=2, state="ready"
    )
    deployment_reconcile_run(deployment_id=deployment.pk)  # records its spec digest and creates its two replicas
    Replica.objects.filter(deployment=deployment).update(state=RState.READY)
    deployment.refresh_from_db()
    return deployment


def _live(deployment):
    return list(deployment.replicas.exclude(state=RState.STOPPED).order_by("pk"))


def _step(deployment):
    deployment_reconcile_run(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    return _live(deployment)


def _health_makes_new_ready(deployment):
    new = deployment.replicas.filter(state=RState.PENDING, spec_hash=deployment.spec_hash)
    new.update(state=RState.READY, endpoint="http://127.0.0.1:9")


def _drained(deployment):
    """The health checker saw the draining replicas idle after the grace."""
    long_ago = timezone.now() - timedelta(minutes=5)
    deployment.replicas.filter(state=RState.DRAINING).update(drain_started_at=long_ago)


def test_a_change_of_model_starts_a_rollout_and_is_audited(serving, owner):
    before = serving.spec_hash

    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)

    assert deployment.rollout_state == Rollout.PROGRESSING
    assert deployment.spec_hash != before
    assert deployment.rollout_previous["hash"] == before
    event = AuditEvent.objects.get(action="deployment.rollout.start")
    assert event.changes["changed"] == ["model_id"]


def test_a_change_of_lora_adapters_or_prices_rolls_nothing(serving, owner):
    changes = {"engine_args": {"enable_lora": True}, "price_input_per_mtok_micros": 5}
    deployment = deployment_update(deployment=serving, changes=changes, actor=owner)
    assert deployment.rollout_state == Rollout.PROGRESSING  # enable_lora is an engine argument: it rolls
    rolled = deployment.spec_hash

    deployment = deployment_update(
        deployment=deployment,
        changes={"engine_args": {"enable_lora": True, "lora_modules": [{"name": "sql", "path": "/a"}]}},
        actor=owner,
    )

    assert deployment.spec_hash == rolled
    assert AuditEvent.objects.filter(action="deployment.rollout.start").count() == 1


def test_a_rollout_surges_one_new_replica_then_drains_one_old_per_new_ready_one(serving, owner):
    old = {r.pk for r in _live(serving)}
    deployment = deployment_update(deployment=serving, changes={"image": "vllm/vllm-openai:v0.9.0"}, actor=owner)

    live = _step(deployment)
    assert len(live) == 3  # max_surge 1 above the 2 desired, and no old one out of routing before a new one serves
    assert sum(r.state == RState.READY for r in live) == 2
    new = [r for r in live if r.pk not in old]
    assert [r.spec["image"] for r in new] == ["vllm/vllm-openai:v0.9.0"]

    again = _step(deployment)  # a reconcile run again (a killed worker's message redelivered) repeats nothing
    assert [(r.pk, r.state) for r in again] == [(r.pk, r.state) for r in live]
    _health_makes_new_ready(deployment)
    live = _step(deployment)
    assert sorted(r.state for r in live if r.pk in old) == [RState.DRAINING, RState.READY]
    assert len([r for r in live if r.pk not in old]) == 2  # the next new one, in the drained one's place
    assert rollout_progress(deployment)["old_replicas"] == {RState.DRAINING: 1, RState.READY: 1}

    _health_makes_new_ready(deployment)
    _step(deployment)
    _drained(deployment)
    live = _step(deployment)
    assert {r.state for r in live if r.pk in old} == {RState.STOPPING}
    assert deployment.rollout_state == Rollout.COMPLETE
    assert deployment.state == ModelDeployment.State.READY
    assert AuditEvent.objects.filter(action="deployment.rollout.complete").exists()


def test_a_draining_replica_stays_while_it_runs_requests_and_stops_at_its_drain_timeout(serving, owner):
    deployment = deployment_update(
        deployment=serving, changes={"model_id": "sim/other", "drain_timeout_s": 30}, actor=owner
    )
    _step(deployment)
    _health_makes_new_ready(deployment)
    _step(deployment)
    draining = deployment.replicas.get(state=RState.DRAINING)
    busy = {"running": 3, "waiting": 0, "checked_at": timezone.now().timestamp() + 60}
    Replica.objects.filter(pk=draining.pk).update(
        drain_started_at=timezone.now() - timedelta(seconds=20), last_metrics=busy
    )

    _step(deployment)
    assert deployment.replicas.get(pk=draining.pk).state == RState.DRAINING

    Replica.objects.filter(pk=draining.pk).update(drain_started_at=timezone.now() - timedelta(seconds=31))
    _step(deployment)
    assert deployment.replicas.get(pk=draining.pk).state == RState.STOPPING


def test_a_paused_rollout_moves_nothing_until_it_is_resumed(serving, owner):
    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)
    _step(deployment)
    deployment = deployment_rollout_pause(deployment=deployment, actor=owner, reason="watching")
    _health_makes_new_ready(deployment)

    live = _step(deployment)

    assert [r.state for r in live].count(RState.DRAINING) == 0
    assert deployment.rollout_state == Rollout.PAUSED
    with pytest.raises(DomainRefusal):
        deployment_rollout_pause(deployment=deployment, actor=owner)
    deployment_rollout_resume(deployment=deployment, actor=owner)
    assert [r.state for r in _step(deployment)].count(RState.DRAINING) == 1
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"deployment.rollout.pause", "deployment.rollout.resume"} <= actions


def test_a_rollback_restores_the_old_spec_and_drains_the_new_replicas(serving, owner):
    old_hash, old = serving.spec_hash, {r.pk for r in _live(serving)}
    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)
    _step(deployment)
    _health_makes_new_ready(deployment)
    _step(deployment)  # one old draining, a second new one pending

    deployment = deployment_rollout_rollback(deployment=deployment, actor=owner, reason="bad answers")
    assert (deployment.model_id, deployment.spec_hash) == ("sim/chat", old_hash)
    live = _step(deployment)

    # The new spec's pending replica goes at once; its READY one serves until an old-spec one replaces it.
    rolled_back = [r for r in live if r.spec.get("model_id") == "sim/other"]
    assert sorted(r.state for r in rolled_back) == [RState.READY, RState.STOPPING]
    assert [r.state for r in live if r.pk in old] == [RState.DRAINING, RState.READY]
    assert AuditEvent.objects.get(action="deployment.rollout.rollback").changes["reason"] == "bad answers"


def test_a_failing_new_spec_fails_the_rollout_not_the_deployment(serving, owner, settings):
    settings.INFERIA_ROLLOUT_MAX_FAILURES = 2
    old = {r.pk for r in _live(serving)}
    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/broken"}, actor=owner)
    for _ in range(2):
        _step(deployment)
        deployment.replicas.filter(state=RState.PENDING).update(state=RState.FAILED, last_error="no such model")
        ModelDeployment.objects.filter(pk=deployment.pk).update(replace_after=None)  # skip the back-off's wait
        live = _step(deployment)

    assert deployment.rollout_state == Rollout.FAILED
    assert "no such model" in deployment.rollout_reason
    assert deployment.state == ModelDeployment.State.READY
    assert [r.pk for r in live if r.state == RState.READY] == sorted(old)
    assert not [r for r in live if r.pk not in old and r.state != RState.STOPPING]
    # A replacement of an old replica runs the old spec.
    Replica.objects.filter(pk=min(old)).update(state=RState.FAILED)
    live = _step(deployment)
    replacement = [r for r in live if r.pk not in old and r.state == RState.PENDING]
    assert [r.spec["model_id"] for r in replacement] == ["sim/chat"]
    assert AuditEvent.objects.filter(action="deployment.rollout.fail").exists()


def test_a_rollout_without_progress_past_its_deadline_fails_and_the_old_replicas_keep_serving(serving, owner):
    old = {r.pk for r in _live(serving)}
    deployment = deployment_update(
        deployment=serving, changes={"image": "vllm/vllm-openai:v0.9.0", "rollout_deadline_s": 60}, actor=owner
    )
    _step(deployment)  # the surge replica is created; it never becomes READY
    _step(deployment)
    assert deployment.rollout_state == Rollout.PROGRESSING  # within the deadline: waiting is fine

    ModelDeployment.objects.filter(pk=deployment.pk).update(
        rollout_progressed_at=timezone.now() - timedelta(seconds=61)
    )
    live = _step(deployment)

    assert deployment.rollout_state == Rollout.FAILED
    assert deployment.rollout_reason.startswith("no progress in 60 s: 0/2 replicas run")
    assert deployment.state == ModelDeployment.State.READY
    assert {r.pk for r in live if r.state == RState.READY} == old
    assert [r.state for r in live if r.pk not in old] == [RState.STOPPING]
    event = AuditEvent.objects.filter(action="deployment.rollout.fail").get()
    assert event.changes["reason"] == deployment.rollout_reason


def test_progress_restarts_the_deadline(serving, owner):
    deployment = deployment_update(
        deployment=serving, changes={"image": "vllm/vllm-openai:v0.9.0", "rollout_deadline_s": 60}, actor=owner
    )
    _step(deployment)
    ModelDeployment.objects.filter(pk=deployment.pk).update(
        rollout_progressed_at=timezone.now() - timedelta(seconds=61)
    )
    _health_makes_new_ready(deployment)  # progress: a new replica serves

    _step(deployment)

    assert deployment.rollout_state == Rollout.PROGRESSING
    assert timezone.now() - deployment.rollout_progressed_at < timedelta(seconds=30)


def test_a_paused_rollout_is_not_held_to_its_deadline(serving, owner):
    deployment = deployment_update(
        deployment=serving, changes={"image": "vllm/vllm-openai:v0.9.0", "rollout_deadline_s": 60}, actor=owner
    )
    _step(deployment)
    deployment = deployment_rollout_pause(deployment=deployment, actor=owner)
    ModelDeployment.objects.filter(pk=deployment.pk).update(rollout_progressed_at=timezone.now() - timedelta(hours=1))
    _step(deployment)
    assert deployment.rollout_state == Rollout.PAUSED

    deployment = deployment_rollout_resume(deployment=deployment, actor=owner)  # the deadline runs from now
    _step(deployment)

    assert deployment.rollout_state == Rollout.PROGRESSING


@pytest.mark.parametrize("deadline", [0, -5, 86401])
def test_a_deadline_out_of_bounds_is_refused(serving, owner, deadline):
    with pytest.raises(DomainRefusal, match="rollout_deadline_s"):
        deployment_update(deployment=serving, changes={"rollout_deadline_s": deadline}, actor=owner)


@pytest.mark.parametrize(
    "image",
    ["vllm/vllm-openai", "vllm/vllm-openai:", "acme/Model:1", "x:1\x00", "x" * 250 + ":1.0.0", "-x:1", "a b:1"],
)
def test_an_image_that_is_no_pinned_reference_is_refused(image):
    with pytest.raises(EngineArgsError):
        image_reference_check(image)


@pytest.mark.parametrize(
    "image", ["", "vllm/vllm-openai:v0.9.0", f"ghcr.io:443/acme/vllm@{DIGEST}", f"registry.local/vllm:1.2@{DIGEST}"]
)
def test_a_pinned_image_reference_is_taken(image):
    assert image_reference_check(image) == image


def test_the_rest_api_shows_and_steers_a_rollout(serving, owner, as_user):
    client = as_user(owner)
    response = client.patch(f"/api/deployments/{serving.pk}/", {"image": "vllm/vllm-openai:latest"}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["rollout_state"] == "progressing"

    assert client.post(f"/api/deployments/{serving.pk}/rollout/pause/", {}, format="json").status_code == 200
    progress = client.get(f"/api/deployments/{serving.pk}/rollout/").json()
    assert progress["state"] == "paused"
    assert progress["old_replicas"] == {"ready": 2}
    assert client.post(f"/api/deployments/{serving.pk}/rollout/pause/", {}, format="json").status_code in (400, 409)
    assert client.post(f"/api/deployments/{serving.pk}/rollout/resume/", {}, format="json").status_code == 200
    assert client.post(f"/api/deployments/{serving.pk}/rollout/rollback/", {}, format="json").status_code == 200
    assert client.patch(f"/api/deployments/{serving.pk}/", {"image": "nope"}, format="json").status_code == 400


def test_another_organisation_can_neither_see_nor_steer_a_rollout(serving, owner, outsider, as_user):
    deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)
    client = as_user(outsider)
    assert client.get(f"/api/deployments/{serving.pk}/rollout/").status_code == 404
    for verb in ("pause", "resume", "rollback"):
        assert client.post(f"/api/deployments/{serving.pk}/rollout/{verb}/", {}, format="json").status_code == 404
    assert client.patch(f"/api/deployments/{serving.pk}/", {"model_id": "x/y"}, format="json").status_code == 404
    serving.refresh_from_db()
    assert (serving.rollout_state, serving.model_id) == (Rollout.PROGRESSING, "sim/other")


def test_the_migration_moves_the_providers_image_to_its_deployments(org):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("apps.compute.migrations.0008_deployment_rollouts")
    pool = ComputePoolFactory(organization=org, provider__kind=Provider.Kind.KUBERNETES)
    Provider.objects.filter(pk=pool.provider_id).update(config={"image": "vllm/vllm-openai:v0.8.5"})
    deployment = ModelDeploymentFactory(organization=org, pool=pool)
    replica = ReplicaFactory(deployment=deployment, state=RState.READY)

    migration.image_to_deployments(apps, None)

    deployment.refresh_from_db()
    replica.refresh_from_db()
    assert deployment.image == "vllm/vllm-openai:v0.8.5"
    assert replica.spec_hash == deployment.spec_hash != ""
    assert deployment.rollout_state == Rollout.NONE


def test_a_draining_replica_leaves_the_gateways_catalog_and_its_move_reloads_it(serving, owner):
    from apps.compute.events import ReplicaStateChanged
    from apps.gateway.selectors import deployment_rows_list

    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)
    Replica.objects.filter(deployment=deployment).update(endpoint="http://127.0.0.1:9")
    _step(deployment)
    _health_makes_new_ready(deployment)
    _step(deployment)
    draining = deployment.replicas.get(state=RState.DRAINING)

    (row,) = [row for row in deployment_rows_list() if row.id == deployment.pk]

    assert draining.pk not in {replica[0] for replica in row.replicas}
    assert len(row.replicas) == 2
    move = ReplicaStateChanged(deployment.pk, draining.pk, RState.READY, RState.DRAINING)
    assert move.routing_changed


def test_a_full_pool_holds_the_surge_back_and_max_unavailable_lets_the_rollout_through(serving, owner):
    ComputePool = type(serving.pool)
    ComputePool.objects.filter(pk=serving.pool_id).update(max_nodes=2)
    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)

    live = _step(deployment)
    assert len(live) == 2  # no node for a surge replica: nothing rolls, nothing stops serving
    assert deployment.events.filter(reason__startswith="pool full").exists()

    deployment = deployment_update(deployment=deployment, changes={"max_unavailable": 1}, actor=owner)
    live = _step(deployment)
    assert sorted(r.state for r in live) == [RState.DRAINING, RState.READY]  # the draining one still holds its node
    _drained(deployment)
    live = _step(deployment)
    assert sorted(r.state for r in live) == [RState.PENDING, RState.READY, RState.STOPPING]


def test_each_rollout_step_is_on_the_deployments_history_and_the_table_refuses_a_stray_move(serving, owner):
    from apps.compute.rollout import _rollout_set
    from apps.compute.services import InvalidTransitionError

    deployment = deployment_update(deployment=serving, changes={"model_id": "sim/other"}, actor=owner)
    deployment_rollout_pause(deployment=deployment, actor=owner, reason="watching")

    reasons = list(deployment.events.order_by("id").values_list("reason", flat=True))
    assert reasons[-2:] == ["rollout progressing: model_id changed", "rollout paused: watching"]
    deployment.refresh_from_db()
    with pytest.raises(InvalidTransitionError):
        _rollout_set(deployment, Rollout.COMPLETE, "skipping the resume")
