"""The deployment page's rollout panel: progress shown, a new spec rolled out, pause, resume and roll back through
the compute services with audit; a viewer gets no buttons and a 403, another organisation a 404."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.models import ModelDeployment, Replica
from apps.compute.reconcile import deployment_reconcile_run
from tests.factories import ComputePoolFactory, ModelDeploymentFactory

Rollout = ModelDeployment.RolloutState


@pytest.fixture(autouse=True)
def _no_worker(monkeypatch, redis_cache):
    """Writes ask the worker to reconcile after commit; no worker runs here."""
    monkeypatch.setattr("apps.compute.services.enqueue_reconcile", lambda deployment_id: None)
    monkeypatch.setattr("apps.compute.rollout.enqueue_reconcile", lambda deployment_id: None)


@pytest.fixture
def deployment(org):
    pool = ComputePoolFactory(organization=org, max_nodes=8)  # room for the rollouts' surge
    deployment = ModelDeploymentFactory(
        organization=org, pool=pool, name="chat", state="ready", min_replicas=2, max_replicas=2, desired_replicas=2
    )
    deployment_reconcile_run(deployment_id=deployment.pk)
    Replica.objects.filter(deployment=deployment).update(state=Replica.State.READY)
    deployment.refresh_from_db()
    return deployment


def test_an_owner_rolls_out_a_new_image_pauses_resumes_and_rolls_back(client, owner, deployment):
    client.force_login(owner)
    url = f"/console/deployments/{deployment.pk}"

    response = client.post(f"{url}/rollout/", {"image": "vllm/vllm-openai:v0.9.0", "model_id": "", "engine_args": ""})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert (deployment.image, deployment.rollout_state) == ("vllm/vllm-openai:v0.9.0", Rollout.PROGRESSING)
    html = client.get(f"{url}/").content.decode()
    assert 'data-testid="rollout-old">2 ready' in html
    assert 'data-testid="rollout-pause"' in html

    client.post(f"{url}/rollout/pause/")
    deployment.refresh_from_db()
    assert deployment.rollout_state == Rollout.PAUSED
    assert 'data-testid="rollout-resume"' in client.get(f"{url}/").content.decode()
    client.post(f"{url}/rollout/resume/")
    client.post(f"{url}/rollout/rollback/")
    deployment.refresh_from_db()
    assert (deployment.image, deployment.rollout_state) == ("", Rollout.PROGRESSING)
    actions = set(AuditEvent.objects.filter(actor_user_id=owner.pk).values_list("action", flat=True))
    assert {
        "deployment.rollout.start", "deployment.rollout.pause", "deployment.rollout.resume",
        "deployment.rollout.rollback",
    } <= actions  # fmt: skip


def test_a_bad_image_or_engine_arguments_roll_nothing(client, owner, deployment):
    client.force_login(owner)
    client.post(f"/console/deployments/{deployment.pk}/rollout/", {"image": "not an image"})
    client.post(f"/console/deployments/{deployment.pk}/rollout/", {"engine_args": "[1, 2]"})
    deployment.refresh_from_db()
    assert (deployment.image, deployment.rollout_state) == ("", Rollout.NONE)


def test_a_viewer_sees_no_rollout_buttons_and_a_forged_post_is_refused(client, viewer, owner, deployment):
    client.force_login(owner)
    client.post(f"/console/deployments/{deployment.pk}/rollout/", {"model_id": "sim/other"})
    client.force_login(viewer)
    html = client.get(f"/console/deployments/{deployment.pk}/").content.decode()
    assert 'data-testid="rollout-state">Progressing' in html
    assert 'data-testid="rollout-pause"' not in html
    assert client.post(f"/console/deployments/{deployment.pk}/rollout/pause/").status_code == 403
    deployment.refresh_from_db()
    assert deployment.rollout_state == Rollout.PROGRESSING


def test_another_organisation_gets_404_on_the_rollout_controls(client, outsider, deployment):
    client.force_login(outsider)
    for path in ("rollout/", "rollout/pause/", "rollout/rollback/"):
        assert client.post(f"/console/deployments/{deployment.pk}/{path}", {"model_id": "x/y"}).status_code == 404
    deployment.refresh_from_db()
    assert (deployment.model_id, deployment.rollout_state) == ("sim/chat", Rollout.NONE)
