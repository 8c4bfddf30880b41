"""`POST /api/deployments/external/`: adopting OpenAI-compatible servers the caller runs, in one REST call."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.credentials import provider_credentials
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from tests.factories import ReplicaFactory

URL = "/api/deployments/external/"
PUBLIC = "http://93.184.215.14:8000/v1"  # a literal public address: nothing is resolved, nothing is called


def body(org, **fields):
    return {"organization": org.pk, "served_model_name": "ext-chat", "base_urls": [PUBLIC], **fields}


def nothing_created() -> bool:
    return not (Provider.objects.exists() or ComputePool.objects.exists() or ModelDeployment.objects.exists())


def test_one_call_creates_the_provider_pool_and_deployment(org, owner, as_user, django_capture_on_commit_callbacks):
    fields = {
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "api_key": "sk-upstream-secret",
        "price_input_per_mtok_micros": 150_000,
        "price_output_per_mtok_micros": 600_000,
    }
    with django_capture_on_commit_callbacks() as callbacks:
        response = as_user(owner).post(URL, body(org, **fields), format="json")

    assert response.status_code == 201, response.data
    assert "sk-upstream-secret" not in str(response.data)
    deployment = ModelDeployment.objects.select_related("pool__provider").get(pk=response.data["id"])
    provider = deployment.pool.provider
    assert (deployment.organization, deployment.pool.organization, provider.organization) == (org, org, org)
    assert (deployment.served_model_name, deployment.model_id) == ("ext-chat", "meta-llama/Llama-3.1-8B-Instruct")
    assert (deployment.desired_replicas, deployment.price_output_per_mtok_micros) == (1, 600_000)
    assert (provider.kind, provider.config["base_urls"]) == ("external", ["http://93.184.215.14:8000"])
    assert "sk-upstream-secret" not in provider.credentials_encrypted
    assert provider_credentials(provider)["api_key"] == "sk-upstream-secret"
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions == ["provider.create", "pool.create", "deployment.create"]
    assert "sk-upstream-secret" not in str(list(AuditEvent.objects.values_list("changes", flat=True)))
    assert any("deployment_create" in callback.__qualname__ for callback in callbacks)  # reconcile after commit


def test_it_makes_one_replica_per_base_url_unless_told_fewer(org, owner, as_user):
    urls = [PUBLIC, "https://93.184.215.15"]

    both = as_user(owner).post(URL, body(org, base_urls=urls), format="json")
    one = as_user(owner).post(URL, body(org, served_model_name="ext-2", base_urls=urls, replicas=1), format="json")
    too_many = as_user(owner).post(URL, body(org, served_model_name="ext-3", replicas=3), format="json")

    assert (both.status_code, both.data["desired_replicas"]) == (201, 2)
    assert (one.status_code, one.data["desired_replicas"]) == (201, 1)
    assert too_many.status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8000",  # private
        "http://127.0.0.1:8000",  # loopback
        "http://169.254.169.254/latest",  # link-local: the cloud metadata service
        "http://[::ffff:10.0.0.5]:8000",  # private inside IPv6
        "http://localhost:8000",  # resolves to loopback
    ],
)
def test_it_refuses_a_non_public_address_and_creates_nothing(org, owner, as_user, settings, url):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False

    response = as_user(owner).post(URL, body(org, base_urls=[PUBLIC, url]), format="json")

    assert response.status_code == 400
    assert "non-public" in str(response.data)
    assert nothing_created()


@pytest.mark.parametrize(
    "url", ["http://134744072:8000", "http://0177.0.0.1:8000", "http://0x7f.1", "http://127.1", "http://10.1.2"]
)
def test_a_host_parsers_read_differently_is_refused_even_when_private_is_allowed(org, owner, as_user, settings, url):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True

    response = as_user(owner).post(URL, body(org, base_urls=[url]), format="json")

    assert response.status_code == 400
    assert "dotted decimal" in str(response.data)
    assert nothing_created()


def test_a_private_address_is_accepted_when_the_setting_allows_it(org, owner, as_user, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True

    response = as_user(owner).post(URL, body(org, base_urls=["http://127.0.0.1:8000"]), format="json")

    assert response.status_code == 201, response.data


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://93.184.215.14/", "http://user:pw@93.184.215.14/"])
def test_it_refuses_other_schemes_and_inline_credentials_even_when_private_is_allowed(
    org, owner, as_user, settings, url
):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True

    response = as_user(owner).post(URL, body(org, base_urls=[url]), format="json")

    assert response.status_code == 400
    assert nothing_created()


def test_an_outsider_cannot_register_into_another_organisation(org, outsider, as_user):
    response = as_user(outsider).post(URL, body(org), format="json")

    assert response.status_code == 400  # the organisation reads as "does not exist" to them
    assert "organization" in response.data
    assert nothing_created()


def test_a_viewer_may_not_register_one(org, viewer, as_user):
    response = as_user(viewer).post(URL, body(org), format="json")

    assert response.status_code == 403
    assert nothing_created()


def test_a_taken_served_name_leaves_no_provider_or_pool_behind(org, owner, as_user):
    assert as_user(owner).post(URL, body(org), format="json").status_code == 201

    again = as_user(owner).post(URL, body(org, name="other", base_urls=["http://93.184.215.15"]), format="json")

    assert again.status_code == 409
    assert (Provider.objects.count(), ComputePool.objects.count(), ModelDeployment.objects.count()) == (1, 1, 1)


def registered(client, org, name="ext-chat"):
    response = client.post(URL, body(org, served_model_name=name), format="json")
    assert response.status_code == 201, response.data
    return ModelDeployment.objects.select_related("pool__provider").get(pk=response.data["id"])


def test_deleting_a_registered_deployment_deletes_the_provider_and_pool_made_for_it(org, owner, as_user):
    client = as_user(owner)
    pending = registered(client, org)
    stopped = registered(client, org, name="ext-stopped")
    ReplicaFactory(deployment=stopped, state=Replica.State.STOPPED)  # stopped, then deleted
    ModelDeployment.objects.filter(pk=stopped.pk).update(state=ModelDeployment.State.STOPPED)

    assert client.delete(f"/api/deployments/{pending.pk}/").status_code == 204
    assert client.delete(f"/api/deployments/{stopped.pk}/").status_code == 204

    assert nothing_created()
    deleted = AuditEvent.objects.filter(action__endswith=".delete").values_list("action", "target_id")
    assert sorted(deleted) == sorted(
        (f"{kind}.delete", str(obj.pk))
        for d in (pending, stopped)
        for kind, obj in (("deployment", d), ("pool", d.pool), ("provider", d.pool.provider))
    )


def test_a_registered_pool_or_provider_still_in_use_is_kept(org, owner, as_user):
    client = as_user(owner)
    first = registered(client, org)
    second = client.post(
        "/api/deployments/",
        {"organization": org.pk, "pool": first.pool.pk, "name": "also", "model_id": "m", "served_model_name": "also"},
        format="json",
    )
    assert second.status_code == 201, second.data
    other = registered(client, org, name="ext-other")
    spare = client.post(
        "/api/pools/", {"organization": org.pk, "provider": other.pool.provider.pk, "name": "spare"}, format="json"
    )
    assert spare.status_code == 201, spare.data

    assert client.delete(f"/api/deployments/{first.pk}/").status_code == 204
    assert client.delete(f"/api/deployments/{other.pk}/").status_code == 204

    assert ComputePool.objects.filter(pk=first.pool.pk).exists()  # the second deployment uses it
    assert Provider.objects.filter(pk=first.pool.provider.pk).exists()
    assert not ComputePool.objects.filter(pk=other.pool.pk).exists()
    assert Provider.objects.filter(pk=other.pool.provider.pk).exists()  # the spare pool still uses it


def test_deleting_a_deployment_never_deletes_a_provider_and_pool_made_by_hand(org, owner, as_user):
    client = as_user(owner)
    provider = client.post(
        "/api/providers/",
        {"organization": org.pk, "name": "mine", "kind": "external", "config": {"base_urls": [PUBLIC]}},
        format="json",
    ).data
    pool = client.post(
        "/api/pools/", {"organization": org.pk, "provider": provider["id"], "name": "mine"}, format="json"
    )
    deployment = client.post(
        "/api/deployments/",
        {"organization": org.pk, "pool": pool.data["id"], "name": "d", "model_id": "m", "served_model_name": "d"},
        format="json",
    )

    assert client.delete(f"/api/deployments/{deployment.data['id']}/").status_code == 204

    assert ComputePool.objects.filter(pk=pool.data["id"]).exists()
    assert Provider.objects.filter(pk=provider["id"]).exists()
