"""The compute pages: providers and pools listed, created, edited and deleted through the audited inventory services;
credentials typed once and never shown again (not after saving, not on the edit page, not when a form comes back with
an error, not in the audit log or the logs); deletes refused while something uses the row; another organisation's
rows are 404 and a viewer's forged POSTs 403."""

from __future__ import annotations

import logging

import pytest

from apps.audit.models import AuditEvent
from apps.compute.credentials import provider_credentials
from apps.compute.models import ComputePool, Provider, Replica
from tests.factories import ProviderFactory, ReplicaFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-consoleProviderSecret-7f3a9c"
CREDENTIALS = f'{{"api_key": "{SECRET}"}}'
PUBLIC = "http://93.184.215.14:8000"  # a literal public address: nothing is resolved or called on create


def _provider_form(org, **fields):
    return {
        "organization": org.pk,
        "name": "hosted",
        "kind": "external",
        "config": f'{{"base_urls": ["{PUBLIC}"]}}',
        "credentials": CREDENTIALS,
        **fields,
    }


def _pages_of(client, provider):
    return [
        "/console/compute/providers/",
        f"/console/compute/providers/{provider.pk}/",
        "/console/compute/pools/",
        "/console/audit/",
    ]


def test_an_admin_creates_a_provider_whose_credentials_are_never_shown_again(acme, admin, signed_in, caplog):
    client = signed_in(admin)
    with caplog.at_level(logging.DEBUG):
        response = client.post("/console/compute/providers/new/", _provider_form(acme.org))
    provider = Provider.objects.get(organization=acme.org, name="hosted")
    assert response.status_code == 302
    assert response["Location"] == f"/console/compute/providers/{provider.pk}/"
    assert SECRET not in response.content.decode()
    assert provider_credentials(provider)["api_key"] == SECRET
    assert SECRET not in provider.credentials_encrypted
    followed = client.get(response["Location"])
    assert "stored (encrypted; hidden)" in followed.content.decode()
    for path in _pages_of(client, provider):
        page = client.get(path)
        assert page.status_code == 200, path
        assert SECRET not in page.content.decode(), path
    event = AuditEvent.objects.get(action="provider.create", target_id=str(provider.pk))
    assert event.actor_user_id == admin.pk
    assert SECRET not in str(event.changes)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    "broken",
    [
        {"config": "{not json"},  # the settings refused: the credentials must not come back in the form
        {"name": "acme-provider"},  # the name taken (the service refuses)
        {"credentials": f'{{"api_key": "{SECRET}"'},  # the credentials themselves malformed
        {"kind": "akash"},  # a kind with no adapter
    ],
)
def test_a_form_shown_again_after_an_error_never_echoes_the_credentials(broken, acme, owner, signed_in):
    response = signed_in(owner).post("/console/compute/providers/new/", _provider_form(acme.org, **broken))
    html = response.content.decode()
    assert response.status_code == 400
    assert 'data-testid="form-errors"' in html
    assert SECRET not in html
    assert 'name="credentials"' in html
    assert 'type="password"' in html
    assert not Provider.objects.filter(name="hosted").exists()


def test_editing_keeps_the_credentials_unless_new_ones_are_typed(acme, owner, signed_in):
    client = signed_in(owner)
    provider = ProviderFactory(organization=acme.org, name="cluster", kind="external", config={"base_urls": [PUBLIC]})
    provider.credentials_encrypted = ""
    url = f"/console/compute/providers/{provider.pk}/"
    client.post(url, {"name": "cluster", "config": f'{{"base_urls": ["{PUBLIC}"]}}', "credentials": CREDENTIALS})
    provider.refresh_from_db()
    assert provider_credentials(provider)["api_key"] == SECRET
    assert AuditEvent.objects.filter(action="provider.credentials_replace", target_id=str(provider.pk)).count() == 1

    response = client.post(url, {"name": "cluster-2", "config": f'{{"base_urls": ["{PUBLIC}"]}}', "credentials": ""})
    provider.refresh_from_db()
    assert response.status_code == 302
    assert provider.name == "cluster-2"
    assert provider_credentials(provider)["api_key"] == SECRET
    assert AuditEvent.objects.filter(action="provider.credentials_replace", target_id=str(provider.pk)).count() == 1
    update = AuditEvent.objects.get(action="provider.update", target_id=str(provider.pk))
    assert "cluster-2" in str(update.changes)
    assert SECRET not in str(update.changes)

    error = client.post(url, {"name": "", "config": "{}", "credentials": '{"api_key": "other-secret-9"}'})
    assert error.status_code == 400
    assert "other-secret-9" not in error.content.decode()
    assert SECRET not in client.get(url).content.decode()
    provider.refresh_from_db()
    assert provider_credentials(provider)["api_key"] == SECRET


def test_deleting_a_provider_is_refused_while_pools_use_it(acme, owner, signed_in):
    client = signed_in(owner)
    response = client.post(f"/console/compute/providers/{acme.provider.pk}/delete/", follow=True)
    assert Provider.objects.filter(pk=acme.provider.pk).exists()
    assert f"Pools still use this provider: {acme.pool.name}" in response.content.decode()

    unused = ProviderFactory(organization=acme.org, name="spare")
    response = client.post(f"/console/compute/providers/{unused.pk}/delete/")
    assert response["Location"] == "/console/compute/providers/"
    assert not Provider.objects.filter(pk=unused.pk).exists()
    assert AuditEvent.objects.filter(action="provider.delete", target_id=str(unused.pk)).exists()


def test_testing_the_connection_shows_the_adapters_answer(acme, owner, signed_in):
    client = signed_in(owner)
    works = client.post(f"/console/compute/providers/{acme.provider.pk}/test/", follow=True)
    assert "Connection works: Replicas run on the worker host" in works.content.decode()

    # A private address the SSRF guard refuses (INFERIA_UPSTREAM_ALLOW_PRIVATE is off): an outcome, not an error.
    external = ProviderFactory(
        organization=acme.org,
        kind="external",
        config={"base_urls": ["http://10.0.0.1:9"]},
        credentials={"api_key": SECRET},
    )
    fails = client.post(f"/console/compute/providers/{external.pk}/test/", follow=True)
    html = fails.content.decode()
    assert fails.status_code == 200
    assert "Connection failed:" in html
    assert SECRET not in html


def test_the_pool_list_shows_provider_gpu_size_price_and_running_replicas(acme, owner, signed_in):
    ComputePool.objects.filter(pk=acme.pool.pk).update(
        gpu_type="H100-80GB", max_nodes=12, cost_per_gpu_hour_micros=2_490_000
    )
    Replica.objects.filter(pk=acme.replica.pk).update(state=Replica.State.READY)
    ReplicaFactory(deployment=acme.deployment, state=Replica.State.STARTING)
    html = signed_in(owner).get("/console/compute/pools/").content.decode()
    row = html[html.index('data-testid="pool-row"') :]
    row = row[: row.index("</tr>")]
    for shown in ("acme-pool", "acme-provider", "H100-80GB", ">12<", "2.49"):
        assert shown in row, shown
    assert '<td data-testid="pool-running">1</td>' in row


def test_an_owner_creates_edits_and_deletes_a_pool(acme, owner, signed_in):
    client = signed_in(owner)
    response = client.post(
        "/console/compute/pools/new/",
        {
            "organization": acme.org.pk,
            "name": "a100s",
            "provider": acme.provider.pk,
            "region": "eu-west",
            "gpu_type": "A100",
            "gpus_per_node": "8",
            "max_nodes": "4",
            "cost": "1.25",
        },
    )
    pool = ComputePool.objects.get(organization=acme.org, name="a100s")
    assert response["Location"] == f"/console/compute/pools/{pool.pk}/"
    assert (pool.gpus_per_node, pool.max_nodes, pool.cost_per_gpu_hour_micros) == (8, 4, 1_250_000)
    assert 'value="1.25"' in client.get(response["Location"]).content.decode()

    form = {"name": "a100s", "provider": acme.provider.pk, "gpus_per_node": "8", "max_nodes": "6", "cost": "1.5"}
    client.post(f"/console/compute/pools/{pool.pk}/", form)
    pool.refresh_from_db()
    assert (pool.max_nodes, pool.cost_per_gpu_hour_micros) == (6, 1_500_000)
    update = AuditEvent.objects.get(action="pool.update", target_id=str(pool.pk))
    assert update.changes["max_nodes"] == {"before": 4, "after": 6}
    assert update.changes["cost_per_gpu_hour_micros"] == {"before": 1_250_000, "after": 1_500_000}

    client.post(f"/console/compute/pools/{pool.pk}/delete/")
    assert not ComputePool.objects.filter(pk=pool.pk).exists()
    assert AuditEvent.objects.filter(action="pool.delete", target_id=str(pool.pk)).exists()


def test_deleting_a_pool_is_refused_while_deployments_use_it(acme, owner, signed_in):
    response = signed_in(owner).post(f"/console/compute/pools/{acme.pool.pk}/delete/", follow=True)
    assert ComputePool.objects.filter(pk=acme.pool.pk).exists()
    assert f"Deployments still use this pool: {acme.deployment.served_model_name}" in response.content.decode()


def test_a_pool_cannot_use_another_organisations_provider(acme, globex, owner, signed_in):
    form = {"organization": acme.org.pk, "name": "stolen", "provider": globex.provider.pk, "gpus_per_node": "1"}
    response = signed_in(owner).post("/console/compute/pools/new/", {**form, "max_nodes": "1"})
    assert response.status_code == 400
    assert not ComputePool.objects.filter(name="stolen").exists()


def test_lists_show_only_the_organisations_own_rows(acme, globex, owner, signed_in):
    client = signed_in(owner)
    providers = client.get("/console/compute/providers/").content.decode()
    pools = client.get("/console/compute/pools/").content.decode()
    assert "acme-provider" in providers
    assert "globex-provider" not in providers
    assert "acme-pool" in pools
    assert "globex-pool" not in pools


@pytest.mark.parametrize("kind", ["provider", "pool"])
def test_another_organisations_rows_are_not_found(kind, acme, globex, owner, signed_in):
    client = signed_in(owner)
    row = getattr(globex, kind)
    base = f"/console/compute/{kind}s/{row.pk}/"
    assert client.get(base).status_code == 404
    assert client.post(base, {"name": "taken-over"}).status_code == 404
    assert client.post(f"{base}delete/").status_code == 404
    if kind == "provider":
        assert client.post(f"{base}test/").status_code == 404
    row.refresh_from_db()
    assert row.name != "taken-over"
    create = client.post(f"/console/compute/{kind}s/new/", {"organization": globex.org.pk, "name": "x"})
    assert create.status_code == 403


@pytest.mark.parametrize("kind", ["provider", "pool"])
def test_a_viewer_sees_but_cannot_change(kind, acme, viewer, signed_in):
    client = signed_in(viewer)
    row = getattr(acme, kind)
    base = f"/console/compute/{kind}s/{row.pk}/"
    page = client.get(base).content.decode()
    assert f'data-testid="{kind}-save"' not in page
    assert f'data-testid="{kind}-delete"' not in page
    assert f'data-testid="{kind}-new"' not in client.get(f"/console/compute/{kind}s/").content.decode()
    assert client.post(base, {"name": "renamed"}).status_code == 403
    assert client.post(f"{base}delete/").status_code == 403
    if kind == "provider":
        assert 'name="credentials"' not in page
        assert client.post(f"{base}test/").status_code == 403
    assert client.post(f"/console/compute/{kind}s/new/", {"organization": acme.org.pk, "name": "x"}).status_code == 403
    row.refresh_from_db()
    assert row.name != "renamed"
    assert not AuditEvent.objects.filter(action__in=[f"{kind}.update", f"{kind}.delete", f"{kind}.create"]).exists()


@pytest.mark.parametrize("url", ["/console/compute/providers/", "/console/compute/pools/"])
def test_lists_run_a_fixed_number_of_queries(url, acme, owner, signed_in, django_assert_num_queries):
    client = signed_in(owner)
    client.get(url)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for n in range(5):
        ReplicaFactory(
            deployment__organization=acme.org,
            deployment__pool__organization=acme.org,
            deployment__pool__provider__organization=acme.org,
            state=Replica.State.READY,
            deployment__served_model_name=f"m{n}",
        )
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_the_superadmin_manages_the_platforms_own_providers(root, client):
    response = client.post(
        "/console/compute/providers/new/",
        {"organization": "__platform__", "name": "shared-sim", "kind": "simulator", "config": "{}", "credentials": ""},
    )
    provider = Provider.objects.get(name="shared-sim")
    assert response.status_code == 302
    assert provider.organization_id is None
    assert "shared-sim" in client.get("/console/compute/providers/?org=__platform__").content.decode()


def test_only_the_superadmin_adds_platform_rows(acme, owner, signed_in):
    form = {"organization": "__platform__", "name": "sneaky", "kind": "simulator", "config": "{}"}
    assert signed_in(owner).post("/console/compute/providers/new/", form).status_code == 403
    assert not Provider.objects.filter(name="sneaky").exists()
