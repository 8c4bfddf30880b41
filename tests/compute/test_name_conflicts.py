"""A name its owner already uses is a 409 naming what holds it, on every compute endpoint that writes one; no database
constraint's name reaches a user. Registering the same external servers again changes nothing."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.compute.models import ComputePool, ModelDeployment, Provider
from tests.factories import ComputePoolFactory, ModelDeploymentFactory

EXTERNAL = "/api/deployments/external/"
PUBLIC = "http://93.184.215.14:8000"  # a literal public address: nothing is resolved, nothing is called
CONSTRAINT_NAMES = ("compute_", "Constraint", "violated", "unique")


def no_constraint_name(response) -> bool:
    text = str(response.data)
    return not any(word in text for word in CONSTRAINT_NAMES)


@pytest.fixture
def client(owner, as_user):
    return as_user(owner)


@pytest.fixture
def pool(org):
    return ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=4)


def external(org, **fields):
    return {"organization": org.pk, "served_model_name": "chat", "base_urls": [PUBLIC], **fields}


def test_registering_an_external_model_under_a_served_name_in_use_is_a_409_naming_the_deployment(org, client, pool):
    held = ModelDeploymentFactory(organization=org, pool=pool, name="team chat", model_id="m", served_model_name="chat")

    response = client.post(EXTERNAL, external(org), format="json")

    assert response.status_code == 409, response.data
    assert response.data["detail"] == f"This organisation already serves 'chat': deployment 'team chat' (id {held.pk})"
    assert response.data["detail"].code == "conflict"
    assert no_constraint_name(response)
    assert not Provider.objects.filter(kind="external").exists()


def test_registering_the_same_urls_and_model_again_changes_nothing(org, client):
    first = client.post(EXTERNAL, external(org, model_id="org/m"), format="json")

    again = client.post(EXTERNAL, external(org, model_id="org/m", base_urls=[PUBLIC + "/v1/"]), format="json")

    assert first.status_code == 201
    assert again.status_code == 200, again.data
    assert again.data["id"] == first.data["id"]
    assert (Provider.objects.count(), ComputePool.objects.count(), ModelDeployment.objects.count()) == (1, 1, 1)


@pytest.mark.parametrize(
    "change", [{"base_urls": ["http://93.184.215.15:8000"]}, {"base_urls": [PUBLIC, "http://93.184.215.15"]}]
)
def test_other_urls_under_the_same_served_name_are_a_409(org, client, change):
    first = client.post(EXTERNAL, external(org), format="json")

    again = client.post(EXTERNAL, external(org, **change), format="json")

    assert again.status_code == 409
    assert f"deployment 'chat' (id {first.data['id']})" in again.data["detail"]
    assert ModelDeployment.objects.count() == 1


def test_another_upstream_model_under_the_same_served_name_is_a_409(org, client):
    client.post(EXTERNAL, external(org, model_id="org/a"), format="json")

    again = client.post(EXTERNAL, external(org, model_id="org/b"), format="json")

    assert again.status_code == 409


def test_a_deployment_created_or_renamed_onto_a_served_name_in_use_is_a_409(org, client, pool):
    body = {"organization": org.pk, "pool": pool.pk, "name": "a", "model_id": "m", "engine": "inferia-sim"}
    first = client.post("/api/deployments/", {**body, "served_model_name": "chat"}, format="json")
    other = client.post("/api/deployments/", {**body, "served_model_name": "other"}, format="json")

    created = client.post("/api/deployments/", {**body, "served_model_name": "chat"}, format="json")
    renamed = client.patch(f"/api/deployments/{other.data['id']}/", {"served_model_name": "chat"}, format="json")
    kept = client.patch(f"/api/deployments/{first.data['id']}/", {"served_model_name": "chat"}, format="json")

    assert (created.status_code, renamed.status_code, kept.status_code) == (409, 409, 200)
    assert f"deployment 'a' (id {first.data['id']})" in created.data["detail"]
    assert no_constraint_name(created)
    assert no_constraint_name(renamed)


def test_provider_and_pool_names_in_use_are_a_409_naming_the_holder(org, client, pool):
    provider = client.post(
        "/api/providers/", {"organization": org.pk, "name": "sim", "kind": "simulator"}, format="json"
    )
    second = client.post(
        "/api/providers/", {"organization": org.pk, "name": "sim2", "kind": "simulator"}, format="json"
    )
    provider_renamed = client.patch(f"/api/providers/{second.data['id']}/", {"name": "sim"}, format="json")
    new_pool = client.post(
        "/api/pools/", {"organization": org.pk, "provider": pool.provider_id, "name": "sim-pool"}, format="json"
    )
    other_pool = client.post(
        "/api/pools/", {"organization": org.pk, "provider": pool.provider_id, "name": "p2"}, format="json"
    )
    pool_renamed = client.patch(f"/api/pools/{other_pool.data['id']}/", {"name": "sim-pool"}, format="json")

    assert [r.status_code for r in (provider, provider_renamed, new_pool, pool_renamed)] == [409] * 4
    assert provider.data["detail"] == f"This organisation already has a provider named 'sim' (id {pool.provider_id})"
    assert pool_renamed.data["detail"] == f"This organisation already has a pool named 'sim-pool' (id {pool.pk})"
    assert all(no_constraint_name(r) for r in (provider, provider_renamed, new_pool, pool_renamed))


def test_min_above_max_is_a_plain_400(org, client, pool):
    body = {"organization": org.pk, "pool": pool.pk, "name": "a", "model_id": "m", "served_model_name": "chat"}

    response = client.post("/api/deployments/", {**body, "min_replicas": 3, "max_replicas": 1}, format="json")

    assert response.status_code == 400
    assert no_constraint_name(response)


def test_every_compute_constraint_has_a_message_of_its_own():
    for model in (Provider, ComputePool, ModelDeployment):
        for constraint in model._meta.constraints:
            message = constraint.get_violation_error_message()
            assert constraint.name not in message, constraint.name


def test_full_clean_of_a_taken_name_speaks_plainly(org, pool):
    with pytest.raises(ValidationError) as caught:
        Provider(organization=org, name="sim", kind="simulator").full_clean()

    assert caught.value.messages == ["This organisation already has a provider with this name."]
