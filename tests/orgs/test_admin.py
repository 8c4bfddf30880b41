"""People and organisations in Django admin: the effects of what the services allow, platform rights that are not
edited there at all, and a service's refusal shown on the page with nothing changed."""

from __future__ import annotations

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.orgs import services as org_services
from apps.orgs.models import Membership, Organization, Team, User
from apps.rbac.services import role_create
from tests.admin_forms import page_form


def test_an_organisation_added_in_admin_is_created_and_then_set_by_the_services(client, root):
    response = client.post(
        "/admin/orgs/organization/add/",
        {"name": "Initech", "slug": "initech", "is_active": "on", "require_2fa": "on", "capture_retention_days": "7",
         "teams-TOTAL_FORMS": "1",
         "teams-INITIAL_FORMS": "0", "teams-0-name": "Ops", "teams-0-slug": "ops"},
    )  # fmt: skip

    assert response.status_code == 302
    organization = Organization.objects.get(slug="initech")
    assert organization.require_2fa
    assert list(organization.teams.values_list("slug", flat=True)) == ["ops"]
    actions = AuditEvent.objects.filter(actor_user_id=root.pk).order_by("seq").values_list("action", flat=True)
    assert list(actions) == ["org.create", "org.update", "team.create"]


def test_platform_rights_and_passwords_are_not_edited_in_admin(client, root, org):
    person = User.objects.create_user("ada@example.com", "correct horse battery")

    client.post(
        f"/admin/orgs/user/{person.pk}/change/",
        {"email": "ada@example.com", "full_name": "Ada", "is_active": "on", "is_staff": "on", "is_superuser": "on"},
    )
    password_page = client.get(f"/admin/orgs/user/{person.pk}/password/")

    person.refresh_from_db()
    assert person.full_name == "Ada"
    assert not person.is_staff
    assert not person.is_superuser
    assert password_page.status_code == 403
    assert client.get("/admin/auth/group/").status_code == 404


def test_a_membership_changes_role_through_the_service(client, root, org, roles, member):
    membership = Membership.objects.get(user=member)

    response = client.post(f"/admin/orgs/membership/{membership.pk}/change/", {"role": roles["viewer"].pk})

    assert response.status_code == 302
    membership.refresh_from_db()
    assert membership.role == roles["viewer"]
    event = AuditEvent.objects.get(action="membership.update", actor_user_id=root.pk)
    assert event.changes["role"] == {"before": "member", "after": "viewer"}


def test_a_refusal_is_shown_on_the_page_and_changes_nothing(client, root, org, other_org, roles, member):
    membership = Membership.objects.get(user=member)
    foreign = role_create(organization=other_org, slug="auditor", name="Auditor", permissions=[], actor=None)

    response = client.post(f"/admin/orgs/membership/{membership.pk}/change/", {"role": foreign.pk}, follow=True)

    assert "Not saved: the role belongs to another organisation" in response.content.decode()
    membership.refresh_from_db()
    assert membership.role == roles["member"]
    assert not AuditEvent.objects.filter(action="membership.update").exists()


def test_a_team_with_live_keys_is_not_deleted_from_the_organisation_page(client, root, org):
    team = org_services.team_create(organization=org, name="Search", slug="search", actor=None)
    api_key_create(organization=org, team=team, name="ci", scopes=["inference"])
    url = f"/admin/orgs/organization/{org.pk}/change/"

    response = client.post(url, {**page_form(client, url), "teams-0-DELETE": "on"})

    assert "would require deleting the following protected related objects" in response.content.decode()
    assert Team.objects.filter(pk=team.pk).exists()
    assert not AuditEvent.objects.filter(action="team.delete").exists()
