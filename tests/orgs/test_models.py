from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from apps.orgs.models import Team, User
from tests.factories import MembershipFactory, UserFactory


def test_user_emails_are_unique_whatever_their_case(db):
    UserFactory(email="Ann@Example.test", password="pw-long-enough")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(email="ann@example.TEST")


def test_a_user_has_one_membership_per_organisation(owner, org, roles):
    with pytest.raises(IntegrityError), transaction.atomic():
        MembershipFactory(user=owner, organization=org, role=roles["viewer"])


def test_team_slugs_repeat_only_across_organisations(org, other_org):
    Team.objects.create(organization=org, name="ML", slug="ml")
    Team.objects.create(organization=other_org, name="ML", slug="ml")
    with pytest.raises(IntegrityError), transaction.atomic():
        Team.objects.create(organization=org, name="ML again", slug="ml")


def test_builtin_roles_are_idempotent(roles):
    from apps.rbac.services import roles_ensure_builtin

    again = roles_ensure_builtin()
    assert {slug: role.pk for slug, role in again.items()} == {slug: role.pk for slug, role in roles.items()}
    assert roles["viewer"].permissions.exclude(codename__startswith="view_").count() == 0
    assert roles["owner"].permissions.count() > roles["admin"].permissions.count() > roles["member"].permissions.count()
