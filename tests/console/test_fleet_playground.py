"""The playground as a fleet's owners meet it: it opens on an organisation that has something to chat with, says
plainly when nothing is deployed, labels the key it runs on, preselects a model it is sent to, shows cost and
finish reason, and stops the upstream request when the user presses Stop."""

from __future__ import annotations

import pytest

from apps.compute.models import ComputePool, ModelDeployment
from tests.factories import ComputePoolFactory, MembershipFactory, ModelDeploymentFactory, ProviderFactory


@pytest.fixture(autouse=True)
def _counters(redis_cache):
    """Key caches live in Redis."""


def _deployment(org, name, state=ModelDeployment.State.READY):
    pool = ComputePool.objects.filter(organization=org, name="pool").first() or ComputePoolFactory(
        organization=org, provider=ProviderFactory(organization=org, name="sim"), name="pool"
    )
    return ModelDeploymentFactory(organization=org, pool=pool, name=name, model_id="sim/tiny", state=state)


@pytest.fixture
def owner_of_both(owner, other_org, roles):
    """Owner of Acme (first by name, nothing deployed) and of Globex (a ready model)."""
    MembershipFactory(user=owner, organization=other_org, role=roles["owner"])
    return owner


def test_it_opens_on_an_organisation_with_a_ready_model(client, owner_of_both, org, other_org):
    _deployment(other_org, "globex-chat")
    client.force_login(owner_of_both)
    html = client.get("/console/playground/").content.decode()
    assert f'data-org="{other_org.slug}"' in html
    assert '<option value="globex-chat"' in html
    assert "not a member" not in html


def test_an_organisation_asked_for_by_name_is_kept_even_when_empty(client, owner_of_both, org, other_org):
    _deployment(other_org, "globex-chat")
    client.force_login(owner_of_both)
    html = client.get(f"/console/playground/?org={org.slug}").content.decode()
    assert "Nothing is deployed in Acme" in html
    assert f'href="/console/deployments/?org={org.slug}"' in html


def test_with_nothing_deployed_anywhere_it_says_so_plainly(client, owner, org):
    client.force_login(owner)
    html = client.get("/console/playground/").content.decode()
    assert "Nothing is deployed in Acme" in html
    assert "not a member" not in html


def test_a_superadmin_who_owns_an_organisation_is_never_told_they_are_not_a_member(client, owner, org):
    owner.is_superuser = True
    owner.is_staff = True
    owner.save()
    _deployment(org, "chat-small")
    client.force_login(owner)
    html = client.get("/console/playground/").content.decode()
    assert "not a member" not in html
    assert f'data-org="{org.slug}"' in html


def test_a_member_whose_role_has_no_playground_is_not_told_they_are_not_a_member(client, org, roles):
    from apps.rbac.models import Role

    bare = Role.objects.create(organization=org, name="Nothing", slug="nothing")
    person = MembershipFactory(user__email="bare@acme.test", organization=org, role=bare).user
    client.force_login(person)
    html = client.get("/console/playground/").content.decode()
    assert "not a member" not in html
    assert "Acme" in html


def test_someone_without_any_organisation_is_told_so(client, db):
    from tests.factories import UserFactory

    client.force_login(UserFactory(email="alone@nowhere.test"))
    assert "You are not a member of an organisation yet" in client.get("/console/playground/").content.decode()
