"""The roles tab: built-in and custom roles shown as what their members can do (`apps.rbac.capabilities`), and
composing or changing a custom role by capability. Saving goes through the audited role services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.people.tabs import people_page_context, roles_visible
from apps.console.pages.support import (
    create_organizations,
    organization_current,
    page_audit_context,
    page_principal,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.orgs.models import Organization
from apps.rbac import services as rbac_services
from apps.rbac.capabilities import CAPABILITIES, CAPABILITIES_BY_SLUG, capabilities_held, capability_permissions
from apps.rbac.models import Role
from apps.rbac.restrict import role_within_reach


class RoleCapabilitiesForm(forms.Form):
    """A custom role's name and what its members can do (capabilities; those they require are added)."""

    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=500, required=False)
    capabilities = forms.MultipleChoiceField(
        choices=[(c.slug, c.label) for c in CAPABILITIES], required=False, widget=forms.CheckboxSelectMultiple
    )


class RoleCreateForm(RoleCapabilitiesForm):
    organization = forms.IntegerField()
    slug = forms.SlugField(max_length=64, required=False)


def _permission_name(permission: Permission) -> str:
    return f"{permission.content_type.app_label}.{permission.codename}"


def _role_summary(role: Role) -> dict[str, Any]:
    """A role's capabilities (labels) and how many of its permissions no capability covers; from prefetched rows."""
    held, other = capabilities_held(_permission_name(p) for p in role.permissions.all())
    return {"capabilities": [CAPABILITIES_BY_SLUG[slug] for slug in held], "other_count": len(other)}


def _permissions_held_in(request: HttpRequest, organization: Organization) -> set[str] | None:
    """The permissions the signed-in user holds in `organization` (None: the superadmin, who holds every one)."""
    if page_principal(request).is_superadmin:
        return None
    return {
        _permission_name(p)
        for p in Permission.objects.filter(
            inferia_roles__memberships__user=request.user, inferia_roles__memberships__organization=organization
        ).select_related("content_type")
    }


def _refuse_beyond_held(request: HttpRequest, organization: Organization, permissions: set[str]) -> None:
    held = _permissions_held_in(request, organization)
    if held is not None and permissions - held:
        raise PermissionDenied("You may not compose a role with permissions you do not hold.")


def _capability_rows(checked: set[str]) -> list[dict[str, Any]]:
    return [{"capability": c, "checked": c.slug in checked} for c in CAPABILITIES]


@never_cache
@login_required
@require_GET
def roles_view(request: HttpRequest) -> HttpResponse:
    roles = roles_visible(request)
    current = organization_current(request)
    current_id = current.pk if current is not None else None
    roles = roles.filter(Q(organization__isnull=True) | Q(organization_id=current_id))
    # Built-in roles are shared: count only their holders in the current organisation.
    visible = [current_id]
    roles = list(
        roles.select_related("organization")
        .prefetch_related(Prefetch("permissions", queryset=Permission.objects.select_related("content_type")))
        .annotate(member_count=Count("memberships", filter=Q(memberships__organization__in=visible), distinct=True))
        .order_by("organization_id", "name")[:200]
    )
    custom_ids = [r.pk for r in roles if r.organization_id is not None]
    principal = page_principal(request)
    deletable, changeable = (
        (
            set(Role.objects.filter(pk__in=custom_ids).restrict(principal, action).values_list("pk", flat=True))
            if custom_ids
            else set()
        )
        for action in ("delete", "change")
    )
    create_orgs = create_organizations(request, Role)
    context = {
        **people_page_context(request, "console:member-roles"),
        "roles": [
            {"role": r, "may_delete": r.pk in deletable, "may_change": r.pk in changeable, **_role_summary(r)}
            for r in roles
        ],
        "create_orgs": create_orgs,
        "capability_rows": _capability_rows(set()),
    }
    return render(request, "console/members/roles.html", context)


@login_required
@require_POST
def role_create_view(request: HttpRequest) -> HttpResponse:
    form = RoleCreateForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, "A role needs a name and known capabilities; a slug, if given, is letters, digits, '-', '_'."
        )
        return redirect("console:member-roles")
    values = form.cleaned_data
    organization = require_may_add(request, Role, values["organization"])
    permissions = capability_permissions(values["capabilities"])
    _refuse_beyond_held(request, organization, permissions)
    role, error = service_run(
        rbac_services.role_create,
        organization=organization,
        slug=values["slug"],
        name=values["name"],
        description=values["description"],
        permissions=sorted(permissions),
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Role {role.name} created.")
    return redirect("console:member-roles")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def role_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a custom role's name, description and capabilities. Permissions it holds outside the capabilities
    (given through the API) are kept as they are."""
    action = "change" if request.method == "POST" else "view"
    role = tenant_object(
        Role.objects.filter(organization__isnull=False).select_related("organization"),
        request=request,
        pk=pk,
        action=action,
    )
    organization = role.organization
    assert organization is not None
    current = {_permission_name(p) for p in role.permissions.select_related("content_type")}
    held, other = capabilities_held(current)
    may_change = Role.objects.filter(pk=role.pk).restrict(page_principal(request), "change").exists()
    if request.method == "POST":
        form = RoleCapabilitiesForm(request.POST)
        if form.is_valid():
            if not role_within_reach(principal=page_principal(request), role=role, organization=organization):
                raise PermissionDenied("You may not change a role with more rights than your own.")
            permissions = capability_permissions(form.cleaned_data["capabilities"]) | other
            _refuse_beyond_held(request, organization, permissions)
            _, error = service_run(
                rbac_services.role_update,
                role=role,
                changes={
                    "name": form.cleaned_data["name"],
                    "description": form.cleaned_data["description"],
                    "permissions": sorted(permissions),
                },
                actor=request.user,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, f"Role {form.cleaned_data['name']} saved.")
                return redirect("console:member-roles")
            form.add_error(None, error)
        checked = set(request.POST.getlist("capabilities"))
    else:
        form = RoleCapabilitiesForm(initial={"name": role.name, "description": role.description})
        checked = set(held)
    context = {
        **people_page_context(request, "console:member-roles"),
        "role": role,
        "form": form,
        "may_change": may_change,
        "capability_rows": _capability_rows(checked),
        "other_permissions": sorted(other),
    }
    return render(request, "console/members/role_edit.html", context)


@login_required
@require_POST
def role_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    role = tenant_object(Role.objects.all(), request=request, pk=pk, action="delete")
    _, error = service_run(
        rbac_services.role_delete, role=role, actor=request.user, context=page_audit_context(request)
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Role {role.name} deleted.")
    return redirect("console:member-roles")
