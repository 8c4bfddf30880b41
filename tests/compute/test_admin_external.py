"""Registering an external deployment from Django admin: the same service as `POST /api/deployments/external/`, so
the same SSRF checks (as form errors), the upstream key encrypted and never shown back, and the same audit trail."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.credentials import provider_credentials
from apps.compute.models import ComputePool, ModelDeployment, Provider
from tests.factories import ReplicaFactory, UserFactory

URL = "/admin/compute/modeldeployment/register-external/"
PUBLIC = "http://93.184.215.14:8000/v1"  # a literal public address: nothing is resolved, nothing is called
KEY = "sk-upstreamAdminSecret0123456789"


def form(org, **fields):
    return {
        "organization": org.pk if org else "",
        "base_urls": f"{PUBLIC}\nhttps://93.184.215.15\n",
        "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "served_model_name": "",
        "api_key": KEY,
        "price_input_per_mtok_micros": "150000",
        "price_output_per_mtok_micros": "600000",
        **fields,
    }


def test_the_form_registers_provider_pool_and_deployment_as_the_api_does(client, root, org):
    page = client.get(URL)
    response = client.post(URL, form(org))

    assert page.status_code == 200
    assert 'name="base_urls"' in page.content.decode()
    deployment = ModelDeployment.objects.select_related("pool__provider").get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/compute/modeldeployment/{deployment.pk}/change/"
    provider = deployment.pool.provider
    assert (deployment.organization, provider.organization, provider.kind) == (org, org, "external")
    assert deployment.served_model_name == deployment.model_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert (deployment.desired_replicas, deployment.price_output_per_mtok_micros) == (2, 600_000)
    assert provider.config["base_urls"] == ["http://93.184.215.14:8000", "https://93.184.215.15"]
    assert KEY not in provider.credentials_encrypted
    assert provider_credentials(provider)["api_key"] == KEY
    events = AuditEvent.objects.order_by("seq")
    assert list(events.values_list("action", flat=True)) == ["provider.create", "pool.create", "deployment.create"]
    assert set(events.values_list("actor_user_id", flat=True)) == {root.pk}
    assert KEY not in str(list(events.values_list("changes", flat=True)))
    for shown in (
        f"/admin/compute/modeldeployment/{deployment.pk}/change/",
        f"/admin/compute/provider/{provider.pk}/change/",
        "/admin/compute/modeldeployment/",
    ):
        assert KEY not in client.get(shown).content.decode(), shown


def test_the_served_name_may_differ_and_the_platform_may_own_it(client, root):
    response = client.post(URL, form(None, served_model_name="chat", base_urls=PUBLIC))

    assert response.status_code == 302
    deployment = ModelDeployment.objects.get()
    assert (deployment.organization, deployment.served_model_name, deployment.desired_replicas) == (None, "chat", 1)


@pytest.mark.parametrize("url", ["http://10.0.0.5:8000", "http://127.0.0.1:8000/v1", "http://169.254.169.254/"])
def test_a_private_address_is_a_form_error_and_the_key_is_not_shown_back(client, root, org, settings, url):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False

    response = client.post(URL, form(org, base_urls=f"{PUBLIC}\n{url}"))

    assert response.status_code == 200
    assert "non-public" in str(response.context["form"].errors["base_urls"])
    html = response.content.decode()
    assert "non-public" in html
    assert KEY not in html
    assert not Provider.objects.exists()
    assert not ComputePool.objects.exists()
    assert not ModelDeployment.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_private_address_is_accepted_when_the_setting_allows_it(client, root, org, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True

    response = client.post(URL, form(org, base_urls="http://127.0.0.1:8000"))

    assert response.status_code == 302
    assert ModelDeployment.objects.get().pool.provider.config["base_urls"] == ["http://127.0.0.1:8000"]


def test_a_taken_served_name_is_a_form_error(client, root, org):
    assert client.post(URL, form(org)).status_code == 302

    again = client.post(URL, form(org))

    assert again.status_code == 200
    assert again.context["form"].errors
    assert ModelDeployment.objects.count() == 1


def test_the_changelist_offers_the_form(client, root):
    html = client.get("/admin/compute/modeldeployment/").content.decode()

    assert f'href="{URL}"' in html


def test_staff_without_rights_in_any_organisation_are_refused(client, db, org):
    staff = UserFactory(email="staff@inferia.test", is_staff=True)
    client.force_login(staff)

    assert client.get(URL).status_code == 403
    assert client.post(URL, form(org)).status_code == 403
    assert not ModelDeployment.objects.exists()


def test_admin_deletes_a_stopped_registration_through_the_service_and_refuses_a_running_one(client, root, org):
    from apps.compute.models import Replica

    client.post(URL, form(org))
    deployment = ModelDeployment.objects.get()
    delete_url = f"/admin/compute/modeldeployment/{deployment.pk}/delete/"
    ReplicaFactory(deployment=deployment, state=Replica.State.READY)

    assert client.get(delete_url).status_code == 403  # a replica still serves
    bulk = client.post(
        "/admin/compute/modeldeployment/",
        {"action": "delete_selected", "_selected_action": [deployment.pk], "post": "yes"},
    )
    assert bulk.status_code == 403  # bulk delete asks the same of each deployment
    assert ModelDeployment.objects.filter(pk=deployment.pk).exists()

    deployment.replicas.update(state=Replica.State.STOPPED)
    response = client.post(delete_url, {"post": "yes"})

    assert response.status_code == 302
    assert not ModelDeployment.objects.exists()
    assert not ComputePool.objects.exists()  # what the registration made for it went with it
    assert not Provider.objects.exists()
    assert AuditEvent.objects.filter(action="deployment.delete", actor_user_id=root.pk).count() == 1


def test_the_state_the_worker_records_is_read_only_in_admin(client, root, org):
    client.post(URL, form(org))
    deployment = ModelDeployment.objects.get()
    ModelDeployment.objects.filter(pk=deployment.pk).update(state=ModelDeployment.State.READY, last_error="boom")

    page = client.get(f"/admin/compute/modeldeployment/{deployment.pk}/change/").content.decode()

    for field in ("state", "state_changed_at_0", "last_error", "consecutive_failures"):
        assert f'name="{field}"' not in page
    assert "boom" in page  # shown, not editable
