"""Team services: a slug derived from the name and unique in the organisation, and members added to and taken out
of a team (audited; only members of the team's organisation)."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.orgs import services as org_services
from apps.orgs.models import Membership, Team
from inferia_runtime.errors import DomainRefusal

pytestmark = pytest.mark.django_db


def test_the_slug_comes_from_the_name_with_a_number_when_taken(org, other_org, owner):
    first = org_services.team_create(organization=org, name="Data Science", actor=owner)
    second = org_services.team_create(organization=org, name="data science!", actor=owner)
    third = org_services.team_create(organization=org, name="Data  Science", actor=owner)
    elsewhere = org_services.team_create(organization=other_org, name="Data Science", actor=owner)
    assert (first.slug, second.slug, third.slug, elsewhere.slug) == (
        "data-science",
        "data-science-2",
        "data-science-3",
        "data-science",
    )


def test_a_name_without_letters_or_a_long_one_still_gets_a_valid_slug(org, owner):
    assert org_services.team_create(organization=org, name="???", actor=owner).slug == "team"
    assert org_services.team_create(organization=org, name="!!!", actor=owner).slug == "team-2"
    long_name = "x" * 200
    first = org_services.team_create(organization=org, name=long_name, actor=owner)
    second = org_services.team_create(organization=org, name=long_name, actor=owner)
    assert first.slug == "x" * 64
    assert second.slug == "x" * 62 + "-2"


def test_an_explicit_slug_is_kept(org, owner):
    assert org_services.team_create(organization=org, name="Search", slug="srch", actor=owner).slug == "srch"


def test_members_are_added_and_removed_with_an_audit_event_each(org, owner, member):
    team = org_services.team_create(organization=org, name="Research", actor=owner)
    membership = Membership.objects.get(user=member, organization=org)
    org_services.team_member_add(team=team, membership=membership, actor=owner)
    assert list(membership.teams.all()) == [team]
    with pytest.raises(DomainRefusal, match="already in the team"):
        org_services.team_member_add(team=team, membership=membership, actor=owner)
    org_services.team_member_remove(team=team, membership=membership, actor=owner)
    assert not membership.teams.exists()
    with pytest.raises(DomainRefusal, match="not in the team"):
        org_services.team_member_remove(team=team, membership=membership, actor=owner)
    actions = list(AuditEvent.objects.filter(target_id=str(team.pk)).values_list("action", flat=True).order_by("pk"))
    assert actions == ["team.create", "team.member_add", "team.member_remove"]


def test_a_member_of_another_organisation_cannot_join(org, owner, outsider):
    team = org_services.team_create(organization=org, name="Research", actor=owner)
    foreign = Membership.objects.get(user=outsider)
    with pytest.raises(DomainRefusal, match="only members of the team's organisation"):
        org_services.team_member_add(team=team, membership=foreign, actor=owner)
    assert not Team.objects.get(pk=team.pk).memberships.exists()


def test_the_api_derives_the_slug_when_none_is_given(org, owner, as_user):
    client = as_user(owner)
    created = client.post("/api/teams/", {"organization": org.pk, "name": "Data Science"}, format="json")
    assert created.status_code == 201, created.data
    assert created.data["slug"] == "data-science"
    again = client.post("/api/teams/", {"organization": org.pk, "name": "Data Science"}, format="json")
    assert again.data["slug"] == "data-science-2"


def test_a_slug_that_stays_taken_gives_up_with_the_conflict_and_leaves_the_transaction_usable(org, owner):
    from django.db import IntegrityError

    from inferia_runtime.slugs import SLUG_ATTEMPTS, create_with_unique_slug

    org_services.team_create(organization=org, name="Research", actor=owner)
    tried = []

    def create(slug: str) -> Team:
        tried.append(slug)
        return Team.objects.create(organization=org, name="Research", slug=slug)

    # A view of the siblings that never sees the existing team: every attempt collides, as under a lasting race.
    with pytest.raises(IntegrityError):
        create_with_unique_slug(create, siblings=Team.objects.none(), name="Research", fallback="team")
    assert tried == ["research"] * SLUG_ATTEMPTS
    assert Team.objects.filter(organization=org).count() == 1
