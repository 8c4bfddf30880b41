"""Capabilities: each names real tenant permissions, none shares one with another, and a role composed of
capabilities reads back as exactly those capabilities (with the ones they require)."""

from __future__ import annotations

import itertools

import pytest
from django.contrib.auth.models import Permission

from apps.rbac import services as rbac_services
from apps.rbac.capabilities import (
    CAPABILITIES,
    CAPABILITIES_BY_SLUG,
    capabilities_closure,
    capabilities_held,
    capability_permissions,
)

pytestmark = pytest.mark.django_db


def _tenant_permission_names() -> set[str]:
    perms = Permission.objects.filter(content_type__app_label__in=rbac_services.TENANT_APPS)
    return {f"{p.content_type.app_label}.{p.codename}" for p in perms.select_related("content_type")}


def test_every_capability_names_existing_tenant_permissions_and_none_overlap():
    existing = _tenant_permission_names()
    for capability in CAPABILITIES:
        assert capability.permissions, capability.slug
        assert capability.permissions <= existing, capability.permissions - existing
        assert all(required in CAPABILITIES_BY_SLUG for required in capability.requires)
    for first, second in itertools.combinations(CAPABILITIES, 2):
        assert not first.permissions & second.permissions, (first.slug, second.slug)


@pytest.mark.parametrize("capability", [c.slug for c in CAPABILITIES])
def test_one_capability_round_trips_through_permissions(capability):
    held, other = capabilities_held(capability_permissions([capability]))
    assert held == capabilities_closure([capability])
    assert capability in held
    assert other == set()


def test_every_combination_of_two_round_trips_and_the_full_set_too():
    slugs = [c.slug for c in CAPABILITIES]
    for pair in itertools.combinations(slugs, 2):
        assert capabilities_held(capability_permissions(pair)) == (capabilities_closure(pair), set())
    assert capabilities_held(capability_permissions(slugs)) == (slugs, set())


def test_a_role_saved_with_capabilities_reads_back_the_same(org, owner):
    role = rbac_services.role_create(
        organization=org,
        slug="deployer",
        name="Deployer",
        permissions=sorted(capability_permissions(["deploy_models", "read_usage"])),
        actor=owner,
    )
    names = {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.select_related("content_type")}
    assert capabilities_held(names) == (["view_deployments", "deploy_models", "read_usage"], set())


def test_permissions_outside_the_capabilities_are_reported_as_left_over():
    held, other = capabilities_held({"keys.view_apikey", "keys.add_apikey", "audit.delete_auditevent"})
    assert held == ["view_keys", "use_keys"]
    assert other == {"audit.delete_auditevent"}
    partial, rest = capabilities_held({"keys.change_apikey"})  # half of "manage keys", without "use keys"
    assert partial == []
    assert rest == {"keys.change_apikey"}


def test_builtin_roles_read_as_capabilities(roles):
    names = {
        slug: {f"{p.content_type.app_label}.{p.codename}" for p in role.permissions.select_related("content_type")}
        for slug, role in roles.items()
    }
    viewer_held, viewer_other = capabilities_held(names["viewer"])
    assert "read_usage" in viewer_held
    assert "manage_keys" not in viewer_held
    assert viewer_other == set()
    member_held, member_other = capabilities_held(names["member"])
    assert {"use_keys", "read_usage", "view_deployments"} <= set(member_held)
    assert member_other == set()
    owner_held, _ = capabilities_held(names["owner"])
    assert owner_held == [c.slug for c in CAPABILITIES]


def test_an_unknown_capability_is_a_key_error():
    with pytest.raises(KeyError):
        capability_permissions(["manage_everything"])


def test_the_api_shows_a_roles_capabilities_and_derives_its_slug(org, owner, as_user):
    client = as_user(owner)
    body = {
        "organization": org.pk,
        "name": "Deployers",
        "permissions": sorted(capability_permissions(["deploy_models"])),
    }
    created = client.post("/api/roles/", body, format="json")
    assert created.status_code == 201, created.data
    assert created.data["slug"] == "deployers"
    assert created.data["capabilities"] == ["view_deployments", "deploy_models"]
    assert client.post("/api/roles/", body, format="json").data["slug"] == "deployers-2"
