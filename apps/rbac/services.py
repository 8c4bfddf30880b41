"""Roles and object grants: the built-in roles and their permissions, custom roles, and django-guardian grants
that delegate one object (a deployment, key, pool or provider) to a team or a user."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.db import models, transaction
from guardian.shortcuts import assign_perm, remove_perm

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record, update_begin
from apps.orgs.models import Organization, Team, User
from apps.rbac.models import Role, TeamGroup
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.slugs import create_with_unique_slug
from inferia_runtime.tenancy import tenant_path_of

# The apps whose models tenants work with; their Django model permissions make up roles.
TENANT_APPS = ("orgs", "rbac", "keys", "policies", "compute", "audit", "usage", "knowledge", "notifications")

# Which actions on which apps each built-in role holds. Owners hold everything; admins everything but
# deleting the organisation and editing roles; members use and view; viewers only view.
BUILTIN_ROLES: dict[str, tuple[str, str]] = {
    "owner": ("Owner", "Everything in the organisation, including roles and deleting it."),
    "admin": ("Admin", "Manage members, keys, policies and deployments."),
    "member": ("Member", "Use deployments, manage their own keys, view the rest of their teams."),
    "viewer": ("Viewer", "See, but change nothing."),
}


def _role_permissions(slug: str) -> list[Permission]:
    perms = Permission.objects.filter(content_type__app_label__in=TENANT_APPS).select_related("content_type")
    if slug == "owner":
        return list(perms)
    if slug == "admin":
        return [
            p
            for p in perms
            if not (p.content_type.model == "organization" and p.codename.startswith("delete_"))
            and not (p.content_type.model == "role" and not p.codename.startswith("view_"))
        ]
    if slug == "member":
        # Members create keys and manage the ones they own (`.restrict()`'s owned-rows rule), not their colleagues'.
        return [p for p in perms if p.codename.startswith("view_") or p.codename == "add_apikey"]
    return [p for p in perms if p.codename.startswith("view_")]


@transaction.atomic
def roles_ensure_builtin() -> dict[str, Role]:
    """Create or refresh the built-in roles; running it again changes nothing."""
    roles: dict[str, Role] = {}
    for slug, (name, description) in BUILTIN_ROLES.items():
        role, _ = Role.objects.get_or_create(
            organization=None, slug=slug, defaults={"name": name, "description": description, "is_builtin": True}
        )
        wanted = {p.pk for p in _role_permissions(slug)}
        if set(role.permissions.values_list("pk", flat=True)) != wanted:
            role.permissions.set(wanted)
        roles[slug] = role
    return roles


GRANTABLE_ACTIONS = ("view", "change", "delete")


def team_group(*, team: Team) -> Group:
    """The guardian group standing for `team`, created on first use."""
    link = TeamGroup.objects.select_related("group").filter(team=team).first()
    if link is not None:
        return link.group
    group = Group.objects.create(name=f"inferia-team-{team.pk}")
    TeamGroup.objects.create(team=team, group=group)
    return group


def _check_grant(obj: models.Model, actions: list[str], team: Team | None, user: User | None) -> list[str]:
    path = tenant_path_of(type(obj))
    if path is None or path.grant_via != "pk":  # only rows that carry their own guardian grants are delegated
        raise DomainRefusal(f"{obj._meta.verbose_name} objects cannot be granted")
    unknown = set(actions) - set(GRANTABLE_ACTIONS)
    if unknown or not actions:
        raise DomainRefusal(f"grantable actions are {', '.join(GRANTABLE_ACTIONS)}")
    if (team is None) == (user is None):
        raise DomainRefusal("grant to a team or to a user")
    org_id = getattr(obj, "organization_id", None)
    if org_id is None:
        raise DomainRefusal("platform objects are shared with organisations, not granted")
    if team is not None and team.organization_id != org_id:
        raise DomainRefusal("the team belongs to another organisation")
    if user is not None and not user.memberships.filter(organization_id=org_id).exists():
        raise DomainRefusal("the user is not a member of the object's organisation")
    return [f"{action}_{obj._meta.model_name}" for action in sorted(set(actions))]


@transaction.atomic
def object_grant(
    *,
    obj: models.Model,
    actions: list[str],
    actor: Actor,
    team: Team | None = None,
    user: User | None = None,
    context: AuditContext | None = None,
) -> None:
    """Delegate `actions` on one object to a team (all its members) or to one member of the object's organisation."""
    codenames = _check_grant(obj, actions, team, user)
    holder = team_group(team=team) if team is not None else user
    for codename in codenames:
        assign_perm(codename, holder, obj)
    audit_record(
        action="grant.add",
        actor=actor,
        target=obj,
        changes={"actions": sorted(set(actions)), "team": getattr(team, "pk", None), "user": getattr(user, "pk", None)},
        context=context,
    )


@transaction.atomic
def object_grant_revoke(
    *,
    obj: models.Model,
    actions: list[str],
    actor: Actor,
    team: Team | None = None,
    user: User | None = None,
    context: AuditContext | None = None,
) -> None:
    """Take back a delegation made by `object_grant`."""
    codenames = _check_grant(obj, actions, team, user)
    holder = team_group(team=team) if team is not None else user
    for codename in codenames:
        remove_perm(codename, holder, obj)
    audit_record(
        action="grant.remove",
        actor=actor,
        target=obj,
        changes={"actions": sorted(set(actions)), "team": getattr(team, "pk", None), "user": getattr(user, "pk", None)},
        context=context,
    )


def _tenant_permissions(names: list[str]) -> list[Permission]:
    """Permissions named `app_label.codename`, from the tenant apps only (no platform permissions)."""
    wanted = set(names)
    found = [
        perm
        for perm in Permission.objects.filter(content_type__app_label__in=TENANT_APPS).select_related("content_type")
        if f"{perm.content_type.app_label}.{perm.codename}" in wanted
    ]
    missing = wanted - {f"{p.content_type.app_label}.{p.codename}" for p in found}
    if missing:
        raise DomainRefusal(f"unknown permissions: {', '.join(sorted(missing))}")
    return found


def _role_after(role: Role) -> dict[str, Any]:
    perms = role.permissions.select_related("content_type")
    return {
        "name": role.name,
        "slug": role.slug,
        "description": role.description,
        "permissions": sorted(f"{p.content_type.app_label}.{p.codename}" for p in perms),
    }


@transaction.atomic
def role_create(
    *,
    organization: Organization,
    name: str,
    permissions: list[str],
    actor: Actor,
    slug: str = "",
    description: str = "",
    context: AuditContext | None = None,
) -> Role:
    """A custom role of `organization`, composed of tenant permissions (`compute.view_modeldeployment`, ...).
    Without a `slug`, one is derived from the name, unique in the organisation ("deployers", "deployers-2")."""
    perms = _tenant_permissions(permissions)
    if slug:
        role = Role.objects.create(organization=organization, slug=slug, name=name, description=description)
    else:
        role = create_with_unique_slug(
            lambda derived: Role.objects.create(
                organization=organization, slug=derived, name=name, description=description
            ),
            siblings=Role.objects.filter(organization=organization),
            name=name,
            fallback="role",
        )
    role.permissions.set(perms)
    audit_record(
        action="role.create",
        actor=actor,
        target=role,
        changes=audit_diff(before=None, after=_role_after(role)),
        context=context,
    )
    return role


@transaction.atomic
def role_update(*, role: Role, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None) -> Role:
    """Rename a custom role or change its permissions; members holding it are affected on their next request."""
    if role.is_builtin or role.organization_id is None:
        raise DomainRefusal("built-in roles cannot be changed")
    role, before = update_begin(
        role, changes=changes, allowed=("name", "description", "permissions"), snapshot=_role_after
    )
    role.save()
    if "permissions" in changes:
        role.permissions.set(_tenant_permissions(changes["permissions"]))
    audit_record(
        action="role.update",
        actor=actor,
        target=role,
        changes=audit_diff(before=before, after=_role_after(role)),
        context=context,
    )
    return role


@transaction.atomic
def role_delete(*, role: Role, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a custom role nobody holds."""
    if role.is_builtin or role.organization_id is None:
        raise DomainRefusal("built-in roles cannot be deleted")
    if role.memberships.exists():
        raise DomainRefusal("members still hold this role")
    audit_record(
        action="role.delete",
        actor=actor,
        target=role,
        changes=audit_diff(before=_role_after(role), after=None),
        context=context,
    )
    role.delete()
