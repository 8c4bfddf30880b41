"""A team's page: members of its organisation are added and removed through the audited services; the slug of a
new team comes from its name; nobody reaches across organisations."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.orgs.models import Membership, Team
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_a_team_created_without_a_slug_gets_one_from_its_name(acme, owner, signed_in):
    client = signed_in(owner)
    first = client.post("/console/members/teams/new/", {"organization": acme.org.pk, "name": "Data Science"})
    team = Team.objects.get(organization=acme.org, slug="data-science")
    assert first["Location"] == f"/console/members/teams/{team.pk}/"
    client.post("/console/members/teams/new/", {"organization": acme.org.pk, "name": "Data Science"})
    assert Team.objects.filter(organization=acme.org, slug="data-science-2").exists()
    client.post("/console/members/teams/new/", {"organization": acme.org.pk, "name": "Ops", "slug": "operations"})
    assert Team.objects.filter(organization=acme.org, slug="operations", name="Ops").exists()


def test_an_owner_adds_and_removes_a_member(acme, owner, member, signed_in):
    client = signed_in(owner)
    membership = Membership.objects.get(user=member, organization=acme.org)
    page = client.get(f"/console/members/teams/{acme.team.pk}/").content.decode()
    assert f'<option value="{membership.pk}">{member.email}' in page
    added = client.post(f"/console/members/teams/{acme.team.pk}/members/add/", {"member": membership.pk})
    assert added.status_code == 302
    assert membership.teams.filter(pk=acme.team.pk).exists()
    page = client.get(f"/console/members/teams/{acme.team.pk}/").content.decode()
    assert page.count('data-testid="team-member-row"') == 1
    removed = client.post(f"/console/members/teams/{acme.team.pk}/members/{membership.pk}/remove/")
    assert removed.status_code == 302
    assert not membership.teams.filter(pk=acme.team.pk).exists()
    actions = set(AuditEvent.objects.filter(target_id=str(acme.team.pk)).values_list("action", flat=True))
    assert {"team.member_add", "team.member_remove"} <= actions


def test_a_member_of_another_organisation_cannot_be_added(acme, globex, owner, outsider, signed_in):
    foreign = Membership.objects.get(user=outsider, organization=globex.org)
    client = signed_in(owner)
    response = client.post(f"/console/members/teams/{acme.team.pk}/members/add/", {"member": foreign.pk})
    assert response.status_code == 404
    assert not foreign.teams.exists()
    assert outsider.email not in client.get(f"/console/members/teams/{acme.team.pk}/").content.decode()


def test_a_superadmin_cannot_add_across_organisations_either(acme, globex, outsider, signed_in, django_user_model):
    # The superadmin sees every membership: the team's organisation is what bounds the choice.
    root = django_user_model.objects.create_superuser("root@inferia.test", "correct horse battery")
    foreign = Membership.objects.get(user=outsider, organization=globex.org)
    assert signed_in(root).get(f"/console/members/teams/{acme.team.pk}/").status_code == 200
    response = signed_in(root).post(f"/console/members/teams/{acme.team.pk}/members/add/", {"member": foreign.pk})
    assert response.status_code == 404
    assert not foreign.teams.exists()


def test_another_organisations_team_is_not_found(acme, globex, owner, signed_in):
    own = Membership.objects.get(user=owner, organization=acme.org)
    client = signed_in(owner)
    assert client.get(f"/console/members/teams/{globex.team.pk}/").status_code == 404
    assert client.post(f"/console/members/teams/{globex.team.pk}/members/add/", {"member": own.pk}).status_code == 404
    assert not own.teams.filter(pk=globex.team.pk).exists()


def test_a_viewer_sees_the_team_but_cannot_change_it(acme, viewer, member, signed_in):
    membership = Membership.objects.get(user=member, organization=acme.org)
    client = signed_in(viewer)
    page = client.get(f"/console/members/teams/{acme.team.pk}/").content.decode()
    assert 'data-testid="team-member-add"' not in page
    response = client.post(f"/console/members/teams/{acme.team.pk}/members/add/", {"member": membership.pk})
    assert response.status_code == 403
    assert not membership.teams.filter(pk=acme.team.pk).exists()


def test_the_team_page_runs_a_fixed_number_of_queries(acme, owner, roles, signed_in, django_assert_num_queries):
    client = signed_in(owner)
    url = f"/console/members/teams/{acme.team.pk}/"
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for n in range(5):
        MembershipFactory(user__email=f"p{n}@acme.test", organization=acme.org, role=roles["member"]).teams.add(
            acme.team
        )
        MembershipFactory(user__email=f"q{n}@acme.test", organization=acme.org, role=roles["viewer"])
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200
