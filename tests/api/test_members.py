"""Teams, members and invitations through the REST API, and what removing a member does to their access."""

from __future__ import annotations

from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create
from apps.orgs.models import Invitation, Membership, User
from tests.factories import MembershipFactory, UserFactory


def test_an_owner_creates_renames_and_deletes_a_team(acme, owner, as_user):
    client = as_user(owner)
    created = client.post("/api/teams/", {"organization": acme.org.pk, "name": "ML", "slug": "ml"}, format="json")
    assert created.status_code == 201, created.data
    renamed = client.patch(f"/api/teams/{created.data['id']}/", {"name": "Machine learning"}, format="json")
    assert renamed.data["name"] == "Machine learning"
    event = AuditEvent.objects.get(action="team.update", target_id=str(created.data["id"]))
    assert event.changes == {"name": {"before": "ML", "after": "Machine learning"}}
    assert client.delete(f"/api/teams/{created.data['id']}/").status_code == 204


def test_a_duplicate_slug_is_a_validation_error_not_a_crash(acme, owner, as_user):
    response = as_user(owner).post(
        "/api/teams/", {"organization": acme.org.pk, "name": "Again", "slug": acme.team.slug}, format="json"
    )
    assert response.status_code == 400


def test_a_viewer_may_list_but_not_create(acme, viewer, as_user):
    client = as_user(viewer)
    assert client.get("/api/teams/").data["count"] == 1
    response = client.post("/api/teams/", {"organization": acme.org.pk, "name": "x", "slug": "x"}, format="json")
    assert response.status_code == 403
    assert response.data["detail"]


def test_a_viewer_gets_403_on_a_team_they_can_see(acme, viewer, as_user):
    assert as_user(viewer).patch(f"/api/teams/{acme.team.pk}/", {"name": "x"}, format="json").status_code == 403


def test_an_owner_invites_a_user_who_joins_with_teams_on_accepting(acme, owner, roles, as_user):
    newcomer = UserFactory(email="new@acme.test", password="correct horse battery")
    response = as_user(owner).post(
        "/api/members/",
        {"organization": acme.org.pk, "email": newcomer.email, "role": roles["member"].pk, "teams": [acme.team.pk]},
        format="json",
    )
    assert response.status_code == 202, response.data
    assert response.data["teams"] == [acme.team.pk]
    accepted = as_user(newcomer).post("/api/invitations/accept/", {"token": response.data["token"]}, format="json")
    assert accepted.data["teams"] == [acme.team.pk]


def test_a_custom_role_of_another_organisation_cannot_be_given(acme, globex, owner, as_user):
    newcomer = UserFactory(email="new@acme.test", password="correct horse battery")
    response = as_user(owner).post(
        "/api/members/",
        {"organization": acme.org.pk, "email": newcomer.email, "role": globex.role.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "role" in response.data


def test_removing_a_member_revokes_their_keys_at_once(acme, owner, member, as_user, as_key):
    issued = api_key_create(organization=acme.org, name="m", scopes=["read"], owner=member, actor=member)
    assert as_key(issued.secret).get("/api/teams/").status_code == 200
    membership = Membership.objects.get(user=member, organization=acme.org)
    assert as_user(owner).delete(f"/api/members/{membership.pk}/").status_code == 204
    assert as_key(issued.secret).get("/api/teams/").status_code == 401
    assert ApiKey.objects.get(pk=issued.key.pk).revoked_at is not None
    assert as_user(member).get("/api/teams/").data["count"] == 0
    actions = list(AuditEvent.objects.order_by("-seq").values_list("action", flat=True)[:2])
    assert actions == ["membership.delete", "key.revoke"]


def test_an_invitation_is_accepted_once_by_the_invited_address(acme, owner, roles, as_user):
    created = as_user(owner).post(
        "/api/invitations/",
        {"organization": acme.org.pk, "email": "Joiner@Acme.test", "role": roles["viewer"].pk},
        format="json",
    )
    assert created.status_code == 201, created.data
    token = created.data["token"]
    assert "token" not in as_user(owner).get(f"/api/invitations/{created.data['id']}/").data
    stranger = UserFactory(email="stranger@acme.test", password="correct horse battery")
    assert as_user(stranger).post("/api/invitations/accept/", {"token": token}, format="json").status_code == 400
    joiner = UserFactory(email="joiner@acme.test", password="correct horse battery")
    accepted = as_user(joiner).post("/api/invitations/accept/", {"token": token}, format="json")
    assert accepted.status_code == 201, accepted.data
    assert accepted.data["role_slug"] == "viewer"
    assert as_user(joiner).post("/api/invitations/accept/", {"token": token}, format="json").status_code == 400


def test_an_expired_invitation_is_refused(acme, owner, roles, as_user):
    created = as_user(owner).post(
        "/api/invitations/",
        {"organization": acme.org.pk, "email": "late@acme.test", "role": roles["viewer"].pk},
        format="json",
    )
    Invitation.objects.filter(pk=created.data["id"]).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    late = UserFactory(email="late@acme.test", password="correct horse battery")
    response = as_user(late).post("/api/invitations/accept/", {"token": created.data["token"]}, format="json")
    assert response.status_code == 400
    assert "expired" in str(response.data)
    assert not Membership.objects.filter(user=late).exists()


def test_only_the_superadmin_creates_organisations(acme, owner, as_user):
    payload = {"name": "Initech", "slug": "initech"}
    assert as_user(owner).post("/api/organizations/", payload, format="json").status_code == 403
    root = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    assert as_user(root).post("/api/organizations/", payload, format="json").status_code == 201


def test_an_admin_cannot_make_anyone_an_owner_or_remove_one(acme, owner, roles, as_user):
    admin_user = UserFactory(email="admin@acme.test", password="correct horse battery")
    admin_membership = MembershipFactory(user=admin_user, organization=acme.org, role=roles["admin"])
    client = as_user(admin_user)
    promote = client.patch(f"/api/members/{admin_membership.pk}/", {"role": roles["owner"].pk}, format="json")
    assert promote.status_code == 403
    owner_membership = Membership.objects.get(user=owner)
    assert client.delete(f"/api/members/{owner_membership.pk}/").status_code == 403
    invite = client.post(
        "/api/invitations/",
        {"organization": acme.org.pk, "email": "boss@acme.test", "role": roles["owner"].pk},
        format="json",
    )
    assert invite.status_code == 403
    assert (
        client.patch(f"/api/members/{admin_membership.pk}/", {"role": roles["viewer"].pk}, format="json").status_code
        == 200
    )
