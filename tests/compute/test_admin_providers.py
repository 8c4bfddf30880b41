"""Provider credentials in Django admin: typed once into a password input that goes through
`inventory_services` (encrypted, audited like every admin write), never rendered back and never editable as
ciphertext; an empty input on a change keeps the stored ones."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.credentials import provider_credentials
from apps.compute.models import Provider
from tests.factories import ComputePoolFactory, ProviderFactory

pytestmark = pytest.mark.django_db

ADD = "/admin/compute/provider/add/"
SECRET = "kube-token-admin-3c1d8e"


def _form(org, **fields):
    return {
        "organization": org.pk,
        "name": "cluster",
        "kind": "kubernetes",
        "config": '{"namespace": "inferia"}',
        "credentials": '{"host": "https://k8s.example.com", "token": "%s"}' % SECRET,  # noqa: UP031
        **fields,
    }


def test_admin_adds_a_provider_with_credentials_through_the_service(client, root, org):
    page = client.get(ADD).content.decode()
    response = client.post(ADD, _form(org))

    assert 'type="password" name="credentials"' in page
    assert "credentials_encrypted" not in page
    provider = Provider.objects.get(name="cluster")
    assert response.status_code == 302
    assert provider_credentials(provider)["token"] == SECRET
    event = AuditEvent.objects.get(action="provider.create", target_id=str(provider.pk))
    assert event.actor_user_id == root.pk
    assert SECRET not in str(event.changes)
    for shown in (f"/admin/compute/provider/{provider.pk}/change/", "/admin/compute/provider/"):
        html = client.get(shown).content.decode()
        assert SECRET not in html, shown
        assert provider.credentials_encrypted not in html, shown


def test_a_change_keeps_the_credentials_unless_new_ones_are_typed(client, root, org):
    provider = ProviderFactory(organization=org, name="cluster", kind="kubernetes", credentials={"token": SECRET})
    change = f"/admin/compute/provider/{provider.pk}/change/"
    client.post(change, {"name": "cluster-renamed", "kind": "kubernetes", "config": "{}", "credentials": ""})
    provider.refresh_from_db()
    assert provider.name == "cluster-renamed"
    assert provider_credentials(provider)["token"] == SECRET
    assert not AuditEvent.objects.filter(action="provider.credentials_replace").exists()

    client.post(
        change, {"name": "cluster-renamed", "kind": "kubernetes", "config": "{}", "credentials": '{"token": "t2"}'}
    )
    provider.refresh_from_db()
    assert provider_credentials(provider)["token"] == "t2"
    assert AuditEvent.objects.filter(action="provider.credentials_replace", target_id=str(provider.pk)).count() == 1
    assert AuditEvent.objects.filter(action="provider.update", target_id=str(provider.pk)).count() == 1


def test_malformed_credentials_are_a_form_error_that_does_not_echo_them(client, root, org):
    response = client.post(ADD, _form(org, credentials='{"token": "%s"' % SECRET))  # noqa: UP031
    html = response.content.decode()
    assert response.status_code == 200
    assert "not valid JSON" in html
    assert SECRET not in html
    assert not Provider.objects.filter(name="cluster").exists()


def test_admin_delete_of_a_provider_in_use_is_refused(client, root, org):
    pool = ComputePoolFactory(organization=org, name="busy-pool")
    response = client.post(f"/admin/compute/provider/{pool.provider.pk}/delete/", {"post": "yes"}, follow=True)
    assert Provider.objects.filter(pk=pool.provider.pk).exists()
    assert "busy-pool" in response.content.decode()


def test_a_change_to_a_kind_without_an_adapter_is_refused(client, root, org):
    provider = ProviderFactory(organization=org, name="cluster", kind="kubernetes")
    change = f"/admin/compute/provider/{provider.pk}/change/"
    response = client.post(change, {"name": "cluster", "kind": "akash", "config": "{}", "credentials": ""}, follow=True)
    provider.refresh_from_db()
    assert provider.kind == "kubernetes"
    assert "has no working adapter" in response.content.decode()
    assert not AuditEvent.objects.filter(action="provider.update").exists()
