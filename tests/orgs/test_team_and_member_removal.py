"""Deleting a team and removing a member: what happens to the keys bound to them, decided by keys (which sit above
orgs) on their foreign key and in `membership_offboard`."""

from __future__ import annotations

import pytest
from django.db.models import ProtectedError

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create, api_key_revoke, api_key_rotate, membership_offboard
from apps.orgs.models import Membership, Team
from apps.orgs.services import team_delete


@pytest.fixture
def team(org):
    return Team.objects.create(organization=org, name="Research", slug="research")


def test_a_live_team_key_keeps_its_team_from_being_deleted(org, owner, team):
    api_key_create(organization=org, name="team key", scopes=["read"], team=team)
    events_before = AuditEvent.objects.count()
    with pytest.raises(ValueError, match="revoke or move the team's keys first"):
        team_delete(team=team, actor=owner)
    assert Team.objects.filter(pk=team.pk).exists()
    assert AuditEvent.objects.count() == events_before  # the refused deletion left no audit event behind


def test_a_team_key_protects_its_team_from_any_deletion_path(org, team):
    api_key_create(organization=org, name="team key", scopes=["read"], team=team)
    with pytest.raises(ProtectedError):
        team.delete()


def test_revoked_keys_let_go_of_a_deleted_team(org, owner, team):
    issued = api_key_create(organization=org, name="old team key", scopes=["read"], team=team)
    api_key_revoke(key=issued.key, actor=owner)
    team.delete()  # not only through the service: Django admin deletes the same way
    assert not Team.objects.filter(pk=team.pk).exists()
    assert ApiKey.objects.get(pk=issued.key.pk).team_id is None


def test_offboarding_a_member_revokes_their_keys_there_in_the_same_transaction(org, other_org, owner, member, roles):
    theirs = api_key_create(organization=org, name="m", scopes=["read"], owner=member).key
    Membership.objects.create(user=member, organization=other_org, role=roles["member"])
    elsewhere = api_key_create(organization=other_org, name="m elsewhere", scopes=["read"], owner=member).key
    colleagues = api_key_create(organization=org, name="o", scopes=["read"], owner=owner).key
    membership = Membership.objects.get(user=member, organization=org)

    assert membership_offboard(membership=membership, actor=owner) == 1

    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=elsewhere.pk).revoked_at is None
    assert ApiKey.objects.get(pk=colleagues.pk).revoked_at is None
    actions = list(AuditEvent.objects.order_by("-seq").values_list("action", flat=True)[:2])
    assert actions == ["membership.delete", "key.revoke"]


def test_a_key_in_its_rotation_grace_still_protects_its_team(org, owner, team):
    issued = api_key_create(organization=org, name="team key", scopes=["read"], team=team)
    successor = api_key_rotate(key=issued.key, actor=owner)  # the old key keeps working for the grace period
    api_key_revoke(key=successor.key, actor=owner)
    with pytest.raises(ValueError, match="revoke or move the team's keys first"):
        team_delete(team=team, actor=owner)
    assert ApiKey.objects.get(pk=issued.key.pk).team_id == team.pk


def test_offboarding_ends_a_key_still_in_its_rotation_grace(org, owner, member):
    old = api_key_create(organization=org, name="m", scopes=["read"], owner=member).key
    successor = api_key_rotate(key=old, actor=owner).key
    membership = Membership.objects.get(user=member, organization=org)

    assert membership_offboard(membership=membership, actor=owner) == 2

    for key in ApiKey.objects.filter(pk__in=[old.pk, successor.pk]):
        assert not key.is_usable(), key.name


def test_removing_a_member_in_admin_revokes_their_keys(client, root, org, member):
    theirs = api_key_create(organization=org, name="m", scopes=["read"], owner=member).key
    membership = Membership.objects.get(user=member, organization=org)

    response = client.post(f"/admin/orgs/membership/{membership.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert ApiKey.objects.get(pk=theirs.pk).revoked_at is not None
