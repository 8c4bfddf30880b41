"""The people pages: members (change role, remove), invitations by link, teams and custom roles. Writes go through
the audited services; a viewer's forged POSTs are refused, an admin cannot hand out or take away an owner's
rights, another organisation's rows are 404, and each list runs a fixed number of queries."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.orgs.models import Invitation, Membership, Team
from apps.rbac.models import Role
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGES = ["/console/members/", "/console/members/invitations/", "/console/members/teams/", "/console/members/roles/"]


@pytest.mark.parametrize("url", PAGES)
def test_each_page_runs_a_fixed_number_of_queries(
    url, acme, owner, roles, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    client.get(url)
    with django_assert_max_num_queries(20) as few:
        assert client.get(url).status_code == 200
    for n in range(8):
        user = UserFactory(email=f"extra{n}@acme.test", password="x")
        membership = MembershipFactory(user=user, organization=acme.org, role=roles["member"])
        team = Team.objects.create(organization=acme.org, name=f"t{n}", slug=f"t{n}")
        membership.teams.add(team, acme.team)
        Invitation.objects.create(
            organization=acme.org,
            email=f"i{n}@acme.test",
            role=roles["viewer"],
            token_hash=f"h{n}",
            expires_at=acme.invitation.expires_at,
        )
        Role.objects.create(organization=acme.org, slug=f"r{n}", name=f"r{n}")
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_the_members_page_lists_own_organisation_only(acme, globex, owner, member, signed_in):
    html = signed_in(owner).get("/console/members/").content.decode()
    assert "member@acme.test" in html
    assert "outsider@globex.test" not in html
    assert 'data-testid="member-change-role"' in html


def test_an_owner_changes_a_role_and_it_is_audited(acme, owner, member, roles, signed_in):
    membership = Membership.objects.get(user=member)
    response = signed_in(owner).post(f"/console/members/{membership.pk}/role/", {"role": roles["viewer"].pk})
    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == roles["viewer"]
    assert AuditEvent.objects.filter(action="membership.update", target_id=str(membership.pk)).exists()


def test_an_admin_cannot_make_anyone_an_owner_nor_remove_one(acme, owner, admin, member, roles, signed_in):
    client = signed_in(admin)
    membership = Membership.objects.get(user=member)
    assert client.post(f"/console/members/{membership.pk}/role/", {"role": roles["owner"].pk}).status_code == 403
    owner_membership = Membership.objects.get(user=owner)
    assert client.post(f"/console/members/{owner_membership.pk}/remove/").status_code == 403
    assert client.post(f"/console/members/{owner_membership.pk}/role/", {"role": roles["viewer"].pk}).status_code == 403
    invite = client.post(
        "/console/members/invitations/new/",
        {"organization": acme.org.pk, "email": "boss@acme.test", "role": roles["owner"].pk, "expires_in_days": 7},
    )
    assert invite.status_code == 403
    membership.refresh_from_db()
    owner_membership.refresh_from_db()
    assert membership.role == roles["member"]
    assert owner_membership.role == roles["owner"]
    page = client.get("/console/members/").content.decode()
    assert ">Owner</option>" not in page


def test_removing_a_member_revokes_their_keys(acme, owner, member, signed_in):
    from apps.keys.services import api_key_create

    key = api_key_create(organization=acme.org, name="m", scopes=["inference"], owner=member, actor=member).key
    membership = Membership.objects.get(user=member)
    assert signed_in(owner).post(f"/console/members/{membership.pk}/remove/").status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    key.refresh_from_db()
    assert not key.is_usable()


def test_an_invitation_link_is_shown_once_and_lets_the_invitee_join(acme, owner, roles, signed_in):
    client = signed_in(owner)
    client.post(
        "/console/members/invitations/new/",
        {"organization": acme.org.pk, "email": "new@acme.test", "role": roles["member"].pk, "expires_in_days": 3},
    )
    page = client.get("/console/members/invitations/").content.decode()
    link = re.search(r'data-testid="invite-link">([^<]+)<', page).group(1)
    assert 'data-testid="copy-invite-link"' in page
    assert 'data-testid="invite-link"' not in client.get("/console/members/invitations/").content.decode()
    invitee = UserFactory(email="new@acme.test", password="x")
    joined = signed_in(invitee).post(link.replace("http://testserver", ""))
    assert joined.status_code == 302
    assert Membership.objects.get(user=invitee, organization=acme.org).role == roles["member"]


def test_teams_and_roles_are_created_through_the_services(acme, owner, signed_in):
    client = signed_in(owner)
    client.post("/console/members/teams/new/", {"organization": acme.org.pk, "name": "Research", "slug": "research"})
    assert Team.objects.filter(organization=acme.org, slug="research").exists()
    client.post(
        "/console/members/roles/new/",
        {
            "organization": acme.org.pk,
            "name": "Key keeper",
            "slug": "key-keeper",
            "capabilities": ["manage_keys"],
        },
    )
    role = Role.objects.get(organization=acme.org, slug="key-keeper")
    assert sorted(role.permissions.values_list("codename", flat=True)) == [
        "add_apikey",
        "change_apikey",
        "delete_apikey",
        "view_apikey",
    ]
    assert AuditEvent.objects.filter(action="role.create", target_id=str(role.pk)).exists()


def test_a_viewer_sees_no_buttons_and_forged_posts_are_refused(acme, viewer, member, roles, signed_in):
    client = signed_in(viewer)
    for url in PAGES:
        html = client.get(url).content.decode()
        for testid in (
            "member-change-role",
            "member-remove",
            "invite-submit",
            "team-create",
            "role-create",
            "team-delete",
            "role-delete",
            "invitation-revoke",
        ):
            assert f'data-testid="{testid}"' not in html, (url, testid)
    membership = Membership.objects.get(user=member)
    assert client.post(f"/console/members/{membership.pk}/role/", {"role": roles["viewer"].pk}).status_code == 403
    assert client.post(f"/console/members/{membership.pk}/remove/").status_code == 403
    assert client.post(f"/console/members/teams/{acme.team.pk}/delete/").status_code == 403
    assert client.post(f"/console/members/roles/{acme.role.pk}/delete/").status_code == 403
    assert client.post(f"/console/members/invitations/{acme.invitation.pk}/revoke/").status_code == 403
    forged = [
        ("/console/members/teams/new/", {"organization": acme.org.pk, "name": "x", "slug": "x"}),
        ("/console/members/roles/new/", {"organization": acme.org.pk, "name": "x", "slug": "x"}),
        (
            "/console/members/invitations/new/",
            {"organization": acme.org.pk, "email": "x@acme.test", "role": roles["viewer"].pk, "expires_in_days": 1},
        ),
    ]
    for url, data in forged:
        assert client.post(url, data).status_code == 403, url
    assert Membership.objects.filter(pk=membership.pk, role=roles["member"]).exists()


def test_another_organisations_rows_are_not_found(acme, globex, owner, signed_in, roles):
    client = signed_in(owner)
    foreign_membership = globex.org.memberships.first()
    assert (
        client.post(f"/console/members/{foreign_membership.pk}/role/", {"role": roles["viewer"].pk}).status_code == 404
    )
    assert client.post(f"/console/members/{foreign_membership.pk}/remove/").status_code == 404
    assert client.post(f"/console/members/teams/{globex.team.pk}/delete/").status_code == 404
    assert client.post(f"/console/members/roles/{globex.role.pk}/delete/").status_code == 404
    assert client.post(f"/console/members/invitations/{globex.invitation.pk}/revoke/").status_code == 404
    html = client.get("/console/members/roles/").content.decode()
    assert globex.role.name not in html
