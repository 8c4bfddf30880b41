"""The built-in roles and their permissions."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db import transaction

from apps.rbac.models import Role

# The apps whose models tenants work with; their Django model permissions make up roles.
TENANT_APPS = ("orgs", "rbac", "keys", "policies", "compute", "audit")

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
        return [p for p in perms if p.codename.startswith("view_") or p.codename in {"add_apikey", "change_apikey"}]
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
