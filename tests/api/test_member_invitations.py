"""Adding a person to an organisation always goes through an invitation they accept: nobody is added without consent,
and no answer (REST, console, admin) tells whether an address has an account."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from apps.orgs.models import Invitation, Membership, User
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

# What legitimately differs between two answers: ids, tokens, the address asked for and the times.
_VARIABLE = {"id", "token", "email", "created_at", "expires_at"}


@pytest.fixture
def org_admin(acme, roles):
    user = UserFactory(email="admin@acme.test", password="correct horse battery")
    MembershipFactory(user=user, organization=acme.org, role=roles["admin"])
    return user


@pytest.fixture
def existing(db):
    return UserFactory(email="someone@elsewhere.test", password="correct horse battery")


def _add(client, acme, roles, email):
    payload = {"organization": acme.org.pk, "email": email, "role": roles["member"].pk, "teams": [acme.team.pk]}
    return client.post("/api/members/", payload, format="json")


def test_adding_an_existing_account_makes_no_member_until_they_accept(acme, roles, org_admin, existing, as_user):
    response = _add(as_user(org_admin), acme, roles, existing.email)
    assert response.status_code == 202, response.data
    assert not Membership.objects.filter(user=existing, organization=acme.org).exists()
    invitation = Invitation.objects.get(pk=response.data["id"])
    assert (invitation.email, invitation.accepted_at) == (existing.email, None)
    accepted = as_user(existing).post("/api/invitations/accept/", {"token": response.data["token"]}, format="json")
    assert accepted.status_code == 201, accepted.data
    membership = Membership.objects.get(user=existing, organization=acme.org)
    assert (membership.role, list(membership.teams.all())) == (roles["member"], [acme.team])


def test_the_answer_is_the_same_for_existing_and_unknown_addresses(acme, roles, org_admin, existing, as_user):
    client = as_user(org_admin)
    known, unknown = _add(client, acme, roles, existing.email), _add(client, acme, roles, "nobody@elsewhere.test")
    assert known.status_code == unknown.status_code == 202
    assert known.data.keys() == unknown.data.keys()
    assert {k: v for k, v in known.data.items() if k not in _VARIABLE} == {
        k: v for k, v in unknown.data.items() if k not in _VARIABLE
    }
    assert known.data["detail"] == unknown.data["detail"]
    assert (known.data["email"], unknown.data["email"]) == (existing.email, "nobody@elsewhere.test")


def test_invitations_answer_the_same_for_existing_and_unknown_addresses(acme, roles, org_admin, existing, as_user):
    client = as_user(org_admin)
    answers = [
        client.post(
            "/api/invitations/",
            {"organization": acme.org.pk, "email": email, "role": roles["viewer"].pk},
            format="json",
        )
        for email in (existing.email, "nobody@elsewhere.test")
    ]
    assert answers[0].status_code == answers[1].status_code == 201
    assert [{k: v for k, v in a.data.items() if k not in _VARIABLE} for a in answers].count(
        {k: v for k, v in answers[0].data.items() if k not in _VARIABLE}
    ) == 2


def test_the_console_answers_the_same_for_existing_and_unknown_addresses(acme, roles, org_admin, existing):
    client = Client()
    client.force_login(org_admin)
    pages = []
    for email in (existing.email, "nobody@elsewhere.test"):
        response = client.post(
            "/console/members/invitations/new/",
            {"organization": acme.org.pk, "email": email, "role": roles["member"].pk, "expires_in_days": 3},
        )
        assert (response.status_code, response["Location"]) == (302, "/console/members/invitations/")
        page = client.get("/console/members/invitations/").content.decode()
        notice = re.search(r'<section class="card" aria-labelledby="link-title">.*?</section>', page, re.S)
        assert notice is not None
        pages.append(re.sub(r"/invitations/[\w-]+/|" + re.escape(email), "", notice.group(0)))
    assert pages[0] == pages[1]
    assert not Membership.objects.filter(user=existing, organization=acme.org).exists()


def test_django_admin_adds_no_members_and_cannot_swap_a_members_person(acme, owner, existing):
    root = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    client = Client()
    client.force_login(root)
    assert client.get("/admin/orgs/membership/add/").status_code == 403
    assert client.get("/admin/orgs/invitation/add/").status_code == 403
    membership = Membership.objects.get(user=owner, organization=acme.org)
    client.post(
        f"/admin/orgs/membership/{membership.pk}/change/",
        {"user": existing.pk, "organization": acme.org.pk, "role": membership.role_id},
    )
    membership.refresh_from_db()
    assert membership.user == owner
    assert not Membership.objects.filter(user=existing).exists()
