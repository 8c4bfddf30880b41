"""The console's one organisation context: the top bar's switcher keeps the choice in the session, every list and
create form follows it, and an organisation the user cannot see is a 404 wherever it is asked for."""

from __future__ import annotations

import pytest

from apps.console.scope import SESSION_KEY
from apps.policies.models import GuardrailProfile
from tests.factories import MembershipFactory, OrganizationFactory


@pytest.fixture
def demo(owner, roles):
    """A second organisation the owner of Acme also owns; its name sorts after Acme's."""
    organization = OrganizationFactory(name="Demo", slug="demo")
    MembershipFactory(user=owner, organization=organization, role=roles["owner"])
    return organization


def _switch(client, slug: str, next_url: str = "/console/keys/"):
    return client.post("/console/organisation/", {"org": slug, "next": next_url})


def test_the_switch_is_kept_for_every_later_page(signed_in, owner, org, demo, acme):
    client = signed_in(owner)
    assert "acme team" in client.get("/console/members/teams/").content.decode()

    response = _switch(client, "demo", "/console/members/teams/?older=abc&org=acme&q=x")

    assert response.status_code == 302
    assert response["Location"] == "/console/members/teams/?q=x"  # the old organisation's cursor and choice dropped
    assert client.session[SESSION_KEY] == "demo"
    teams = client.get("/console/members/teams/").content.decode()
    assert "acme team" not in teams
    assert 'value="demo" selected' in teams  # the top bar says where the page is
    assert 'value="demo" selected' in client.get("/console/keys/").content.decode()


def test_a_shared_link_opens_its_organisation_and_keeps_it(signed_in, owner, org, demo, acme):
    client = signed_in(owner)
    _switch(client, "demo")

    assert "acme team" in client.get("/console/members/teams/?org=acme").content.decode()
    assert client.session[SESSION_KEY] == "acme"
    assert "acme team" in client.get("/console/members/teams/").content.decode()


@pytest.mark.parametrize("page", ["/console/keys/", "/console/members/teams/", "/console/dashboard/"])
def test_another_tenants_organisation_is_a_404_by_link(signed_in, owner, org, other_org, page):
    client = signed_in(owner)
    assert client.get(f"{page}?org={other_org.slug}").status_code == 404
    assert client.session.get(SESSION_KEY, "") != other_org.slug


def test_another_tenants_organisation_cannot_be_switched_to(signed_in, owner, org, other_org):
    client = signed_in(owner)
    assert _switch(client, other_org.slug).status_code == 404
    assert client.session.get(SESSION_KEY, "") != other_org.slug


def test_a_kept_organisation_left_since_falls_back_to_the_first(signed_in, owner, org, demo, acme):
    client = signed_in(owner)
    _switch(client, "demo")
    demo.memberships.filter(user=owner).delete()

    page = client.get("/console/members/teams/")

    assert page.status_code == 200
    assert "acme team" in page.content.decode()


@pytest.mark.parametrize("target", ["https://evil.example/console/keys/", "//evil.example/x", "/admin/", ""])
def test_the_switch_goes_back_only_to_console_pages(signed_in, owner, org, demo, target):
    response = _switch(signed_in(owner), "demo", target)
    assert response.status_code == 302
    assert response["Location"] == "/console/"


def test_the_switch_needs_a_post(signed_in, owner, org, demo):
    assert signed_in(owner).get("/console/organisation/?org=demo").status_code == 405


def test_a_create_form_creates_in_the_organisation_shown(signed_in, owner, org, demo):
    client = signed_in(owner)
    _switch(client, "demo")

    form = client.get("/console/policies/profiles/new/").content.decode()

    assert 'data-testid="profile-org-fixed"' in form
    assert f'name="organization" value="{demo.pk}"' in form


def test_a_create_form_keeps_the_posted_organisation_after_an_error(signed_in, owner, org, demo):
    """A form fixed after a validation error still creates where it was first posted, not in the first
    organisation (it used to fall back to it silently)."""
    client = signed_in(owner)
    _switch(client, "acme")

    refused = client.post("/console/policies/profiles/new/", {"organization": demo.pk, "name": ""})

    assert refused.status_code == 200
    html = refused.content.decode()
    assert f'name="organization" value="{demo.pk}"' in html
    assert "In <strong>Demo</strong>" in html
    assert f'name="organization" value="{org.pk}"' not in html
    assert not GuardrailProfile.objects.filter(organization__in=[org, demo]).exclude(name="").exists()


def test_the_superadmin_starts_on_the_platform_where_pages_aggregate(client, django_user_model, org, demo):
    root = django_user_model.objects.create_superuser(email="root@inferia.test", password="x" * 16)
    client.force_login(root)

    dashboard = client.get("/console/dashboard/").content.decode()
    assert 'value="__platform__" selected' in dashboard

    # A list shows one organisation at a time: the first.
    teams = client.get("/console/members/teams/").content.decode()
    assert f'value="{org.slug}" selected' in teams


@pytest.mark.parametrize(
    "page",
    [
        "/console/keys/",
        "/console/policies/",
        "/console/policies/profiles/",
        "/console/members/teams/",
        "/console/members/invitations/",
        "/console/deployments/",
        "/console/templates/",
        "/console/usage/",
        "/console/audit/",
    ],
)
def test_an_empty_list_says_which_organisation_is_empty(signed_in, owner, org, demo, acme, page):
    client = signed_in(owner)
    _switch(client, "demo")
    html = client.get(page).content.decode()
    assert "Nothing in Demo: switch organisation in the top bar to see another's." in html


@pytest.mark.parametrize("page", ["/console/keys/", "/console/policies/"])
def test_a_create_forms_team_list_is_the_organisations_shown(signed_in, owner, org, demo, acme, page):
    from tests.factories import TeamFactory

    TeamFactory(organization=demo, name="demo team", slug="demo-team")
    client = signed_in(owner)

    _switch(client, "demo")
    in_demo = client.get(page).content.decode()
    assert ">demo team</option>" in in_demo
    assert "acme team</option>" not in in_demo

    _switch(client, "acme")
    in_acme = client.get(page).content.decode()
    assert ">acme team</option>" in in_acme
    assert "demo team</option>" not in in_acme


def test_an_invitations_roles_are_listed_once_for_the_organisation_shown(signed_in, owner, org, demo):
    client = signed_in(owner)
    _switch(client, "demo")
    html = client.get("/console/members/invitations/").content.decode()
    assert html.count(">Viewer</option>") == 1
