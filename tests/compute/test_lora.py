"""LoRA adapters on a deployment: added and removed over REST, loaded and unloaded on running replicas (a real
inferia-sim, which implements vLLM's runtime LoRA endpoints), and started with by new replicas."""

from __future__ import annotations

import json
import urllib.request

import pytest

from apps.audit.models import AuditEvent
from apps.compute.adapters import adapter_for
from apps.compute.engine import deployment_engine_spec, vllm_environment, vllm_serve_args
from apps.compute.lora import deployment_lora_sync_run, lora_names
from inferia_sim.config import SimConfig
from inferia_sim.testing import running_sim
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory, ReplicaFactory


@pytest.fixture
def deployment(org):
    pool = ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=4)
    return ModelDeploymentFactory(organization=org, pool=pool, name="base", model_id="org/base", state="ready")


def url(deployment):
    return f"/api/deployments/{deployment.pk}/adapters/"


def remove(client, deployment, name):
    return client.post(f"/api/deployments/{deployment.pk}/adapters/remove/", {"name": name}, format="json")


def served_models(base: str) -> dict[str, str | None]:
    with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as response:  # noqa: S310 - a loopback sim
        return {card["id"]: card.get("parent") for card in json.load(response)["data"]}


def test_an_owner_adds_an_adapter_which_new_replicas_start_with(
    org, owner, deployment, as_user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = as_user(owner).post(url(deployment), {"name": "base-sql", "path": "org/sql-lora"}, format="json")

    assert response.status_code == 201, response.data
    deployment.refresh_from_db()
    assert deployment.engine_args == {
        "lora_modules": [{"name": "base-sql", "path": "org/sql-lora"}],
        "enable_lora": True,
    }
    assert lora_names(deployment.engine_args) == ("base-sql",)
    assert AuditEvent.objects.filter(action="deployment.lora_add", changes__name="base-sql").exists()
    assert any("deployment_lora_add" in callback.__qualname__ for callback in callbacks)  # the sync, after commit
    spec = deployment_engine_spec(deployment)
    assert vllm_serve_args(spec)[-3:] == ["--enable-lora", "--lora-modules", "base-sql=org/sql-lora"]
    assert vllm_environment(spec) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    replica = ReplicaFactory(deployment=deployment)
    command = adapter_for(deployment.pool.provider).command(replica, host="127.0.0.1", port=1)
    assert command[command.index("--model") :][:4] == ["--model", "base", "--model", "base-sql"]


def test_running_replicas_load_an_added_adapter_and_unload_a_removed_one(org, owner, deployment, as_user):
    with running_sim(SimConfig(models=("base",))) as sim:
        ReplicaFactory(deployment=deployment, state="ready", endpoint=sim.url + "/v1")
        client = as_user(owner)
        assert client.post(url(deployment), {"name": "a1", "path": "org/a1"}, format="json").status_code == 201

        added = deployment_lora_sync_run(deployment_id=deployment.pk)
        again = deployment_lora_sync_run(deployment_id=deployment.pk)

        assert list(added.loaded.values()) == [["a1"]]
        assert not added.errors
        assert list(again.loaded.values()) == [[]]  # idempotent
        assert served_models(sim.url) == {"base": None, "a1": "base"}

        assert remove(client, deployment, "a1").status_code == 200
        removed = deployment_lora_sync_run(deployment_id=deployment.pk)

        assert list(removed.unloaded.values()) == [["a1"]]
        assert served_models(sim.url) == {"base": None}
    assert AuditEvent.objects.filter(action="deployment.lora_remove").count() == 1


def test_a_replica_that_refuses_keeps_the_error_and_the_others_still_sync(org, deployment):
    deployment.engine_args = {"enable_lora": True, "lora_modules": [{"name": "a1", "path": "org/a1"}]}
    deployment.save()
    with running_sim(SimConfig(models=("base",))) as sim:
        good = ReplicaFactory(deployment=deployment, state="ready", endpoint=sim.url)
        dead = ReplicaFactory(deployment=deployment, state="ready", endpoint="http://127.0.0.1:9")

        report = deployment_lora_sync_run(deployment_id=deployment.pk)

    assert report.loaded == {good.pk: ["a1"]}
    dead.refresh_from_db()
    assert dead.last_error.startswith("LoRA sync:")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("base", "served model name"),
        ("other", "another model"),
        ("bad name", "without spaces"),
        ("a=b", "without"),
    ],
)
def test_it_refuses_an_adapter_name_that_is_taken_or_malformed(org, owner, deployment, as_user, name, why):
    ModelDeploymentFactory(organization=org, pool=deployment.pool, name="other", model_id="org/other")

    response = as_user(owner).post(url(deployment), {"name": name, "path": "org/x"}, format="json")

    assert response.status_code == 400
    assert why in str(response.data)


def test_it_refuses_a_second_adapter_of_the_same_name_and_removing_an_unknown_one(org, owner, deployment, as_user):
    client = as_user(owner)
    assert client.post(url(deployment), {"name": "a1", "path": "org/a1"}, format="json").status_code == 201

    assert client.post(url(deployment), {"name": "a1", "path": "org/a2"}, format="json").status_code == 400
    assert remove(client, deployment, "nope").status_code == 400


def test_an_external_deployment_takes_no_adapters(org, owner, as_user):
    provider = ProviderFactory(organization=org, name="ext", kind="external", config={"base_urls": ["x"]})
    external = ModelDeploymentFactory(
        organization=org,
        pool=ComputePoolFactory(organization=org, provider=provider, name="ext"),
        name="e",
        model_id="e",
    )

    response = as_user(owner).post(url(external), {"name": "a1", "path": "org/a1"}, format="json")

    assert response.status_code == 400


def test_a_viewer_may_not_add_an_adapter_and_an_outsider_does_not_see_the_deployment(
    org, viewer, outsider, deployment, as_user
):
    body = {"name": "a1", "path": "org/a1"}

    assert as_user(viewer).post(url(deployment), body, format="json").status_code == 403
    assert as_user(outsider).post(url(deployment), body, format="json").status_code == 404
    assert remove(as_user(outsider), deployment, "a1").status_code == 404
    deployment.refresh_from_db()
    assert deployment.engine_args == {}


def test_lora_names_tolerates_any_stored_shape():
    assert lora_names({"lora_modules": {"a": "p", "b c": "p"}}) == ("a",)
    assert lora_names({"lora_modules": [{"name": "a"}, "junk", {"path": "p"}]}) == ("a",)
    assert lora_names(None) == lora_names({"lora_modules": 3}) == ()
