"""The roles page in capabilities: roles show what their members can do, a custom role is composed and changed by
capability through the audited services, and nobody grants more than they hold."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from apps.audit.models import AuditEvent
from apps.rbac.capabilities import capabilities_held, capability_permissions
from apps.rbac.models import Role
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _names(role: Role) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.select_related("content_type")}


def _grant(role: Role, *names: str) -> None:
    for name in names:
        app_label, codename = name.split(".")
        role.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


def test_roles_show_capabilities_and_count_other_permissions(acme, owner, signed_in):
    _grant(acme.role, *capability_permissions(["view_audit"]), "audit.delete_auditevent")
    html = signed_in(owner).get("/console/members/roles/").content.decode()
    row = html.split(acme.role.name)[1].split("</tr>")[0]
    assert "View the audit log" in row
    assert "advanced: 1 other permission" in row
    assert 'data-testid="cap-deploy_models"' in html  # the create form lists capabilities, not codenames
    assert "compute.add_modeldeployment" not in html


def test_a_role_is_created_by_capability_with_what_it_requires(acme, owner, signed_in):
    response = signed_in(owner).post(
        "/console/members/roles/new/",
        {"organization": acme.org.pk, "name": "Deployer", "slug": "deployer", "capabilities": ["deploy_models"]},
    )
    assert response.status_code == 302
    role = Role.objects.get(organization=acme.org, slug="deployer")
    assert capabilities_held(_names(role)) == (["view_deployments", "deploy_models"], set())
    assert AuditEvent.objects.filter(action="role.create", target_id=str(role.pk)).exists()


def test_an_unknown_capability_is_refused(acme, owner, signed_in):
    signed_in(owner).post(
        "/console/members/roles/new/",
        {"organization": acme.org.pk, "name": "X", "slug": "x", "capabilities": ["manage_everything"]},
    )
    assert not Role.objects.filter(organization=acme.org, slug="x").exists()


def test_a_role_is_changed_by_capability_and_keeps_its_other_permissions(acme, owner, signed_in):
    _grant(acme.role, *capability_permissions(["view_audit"]), "audit.delete_auditevent")
    client = signed_in(owner)
    page = client.get(f"/console/members/roles/{acme.role.pk}/").content.decode()
    assert 'value="view_audit" checked' in page
    assert "audit.delete_auditevent" in page
    response = client.post(
        f"/console/members/roles/{acme.role.pk}/",
        {"name": "Usage reader", "description": "reads", "capabilities": ["read_usage"]},
    )
    assert response.status_code == 302
    acme.role.refresh_from_db()
    assert acme.role.name == "Usage reader"
    assert capabilities_held(_names(acme.role)) == (["read_usage"], {"audit.delete_auditevent"})
    event = AuditEvent.objects.filter(action="role.update", target_id=str(acme.role.pk)).latest("pk")
    assert "permissions" in event.changes


def test_nobody_grants_what_they_do_not_hold(acme, signed_in):
    # Someone whose own role lets them manage roles and nothing else.
    limited = Role.objects.create(organization=acme.org, slug="role-maker", name="Role maker")
    _grant(limited, *capability_permissions(["manage_roles"]))
    person = MembershipFactory(user__email="maker@acme.test", organization=acme.org, role=limited).user
    response = signed_in(person).post(
        "/console/members/roles/new/",
        {"organization": acme.org.pk, "name": "Boss", "slug": "boss", "capabilities": ["delete_organization"]},
    )
    assert response.status_code == 403
    assert not Role.objects.filter(slug="boss").exists()
    changed = signed_in(person).post(
        f"/console/members/roles/{acme.role.pk}/", {"name": "x", "capabilities": ["manage_keys"]}
    )
    assert changed.status_code == 403
    assert not capabilities_held(_names(acme.role))[0]


def test_a_viewer_cannot_change_a_role_and_another_organisations_role_is_not_found(
    acme, globex, owner, viewer, signed_in, roles
):
    assert signed_in(viewer).post(f"/console/members/roles/{acme.role.pk}/", {"name": "x"}).status_code == 403
    assert signed_in(owner).get(f"/console/members/roles/{globex.role.pk}/").status_code == 404
    assert signed_in(owner).post(f"/console/members/roles/{globex.role.pk}/", {"name": "x"}).status_code == 404
    assert signed_in(owner).get(f"/console/members/roles/{roles['owner'].pk}/").status_code == 404


def test_a_role_created_without_a_slug_gets_one_from_its_name(acme, owner, signed_in):
    client = signed_in(owner)
    for _ in range(2):
        client.post(
            "/console/members/roles/new/",
            {"organization": acme.org.pk, "name": "Usage Readers", "capabilities": ["read_usage"]},
        )
    slugs = set(Role.objects.filter(organization=acme.org, name="Usage Readers").values_list("slug", flat=True))
    assert slugs == {"usage-readers", "usage-readers-2"}
