"""The model routes page: an owner creates, changes and deletes a route through the audited services; a clash with
a deployment's name is told, not saved; a viewer sees no forms and a forged POST is refused; an outsider sees
nothing of another organisation's routes."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.compute.models import ModelRoute
from tests.factories import ComputePoolFactory, ModelDeploymentFactory

PAGE = "/console/deployments/routes/"


@pytest.fixture
def deployments(org):
    pool = ComputePoolFactory(organization=org, provider__name="sim", name="sim-pool", max_nodes=8)
    return [
        ModelDeploymentFactory(organization=org, pool=pool, name=name, served_model_name=name)
        for name in ("chat-v1", "chat-v2")
    ]


def create(client, org, **fields):
    body = {"organization": org.pk, "name": "chat", "splits": "chat-v1=90\nchat-v2=10", "fallbacks": "chat-v1"}
    return client.post(f"{PAGE}new/", {**body, **fields}, follow=True)


def test_an_owner_creates_changes_and_deletes_a_route(client, owner, org, deployments):
    client.force_login(owner)

    created = create(client, org)
    route = ModelRoute.objects.get()
    html = created.content.decode()
    assert 'data-route="chat"' in html
    assert "Routing chat" in html
    changed = client.post(
        f"{PAGE}{route.pk}/", {"name": "chat", "splits": "chat-v1=50\nchat-v2=50", "fallbacks": ""}, follow=True
    )
    assert [t.weight for t in route.targets.filter(role="split").order_by("position")] == [50, 50]
    assert not route.targets.filter(role="fallback").exists()
    assert "Changed chat" in changed.content.decode()
    client.post(f"{PAGE}{route.pk}/delete/")

    assert not ModelRoute.objects.exists()
    events = AuditEvent.objects.filter(action__startswith="model_route.").order_by("seq")
    actions = list(events.values_list("action", flat=True))
    assert actions == ["model_route.create", "model_route.update", "model_route.delete"]


def test_a_route_under_a_deployments_name_is_told_and_not_saved(client, owner, org, deployments):
    client.force_login(owner)

    html = create(client, org, name="chat-v1").content.decode()

    assert "already serves &#x27;chat-v1&#x27;" in html
    assert not ModelRoute.objects.exists()


@pytest.mark.parametrize("splits", ["chat-v1", "chat-v1=-5", "chat-v1=ten", "", "chat-v1=0"])
def test_malformed_or_zero_weights_are_refused(client, owner, org, deployments, splits):
    client.force_login(owner)

    create(client, org, splits=splits)

    assert not ModelRoute.objects.exists()


def test_a_viewer_sees_no_forms_and_a_forged_post_is_refused(client, owner, viewer, org, deployments):
    client.force_login(owner)
    create(client, org)
    route = ModelRoute.objects.get()
    client.force_login(viewer)

    html = client.get(PAGE).content.decode()

    assert 'data-route="chat"' in html
    assert 'data-testid="route-create-form"' not in html
    assert 'data-testid="route-update-form"' not in html
    assert create(client, org, name="other").status_code == 403
    assert client.post(f"{PAGE}{route.pk}/delete/").status_code == 403
    assert ModelRoute.objects.count() == 1


def test_an_outsider_sees_nothing_of_another_organisations_routes(client, owner, outsider, org, deployments):
    client.force_login(owner)
    create(client, org)
    route = ModelRoute.objects.get()
    client.force_login(outsider)

    assert b'data-route="chat"' not in client.get(PAGE).content
    assert client.post(f"{PAGE}{route.pk}/", {"name": "x", "splits": "chat-v1=1"}).status_code == 404
    assert client.post(f"{PAGE}{route.pk}/delete/").status_code == 404
    assert ModelRoute.objects.get().name == "chat"
