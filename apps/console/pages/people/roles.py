"""The roles tab: built-in and custom roles, and composing a custom role from permissions."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.pages.people.tabs import people_page_context, roles_visible
from apps.console.pages.support import (
    organization_current,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.rbac import services as rbac_services
from apps.rbac.models import Role


class RoleCreateForm(forms.Form):
    organization = forms.IntegerField()
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(max_length=64)
    description = forms.CharField(max_length=500, required=False)
    permissions = forms.MultipleChoiceField(choices=(), required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["permissions"].choices = [(name, name) for name, _ in _tenant_permission_names()]


def _tenant_permission_names() -> list[tuple[str, Permission]]:
    perms = Permission.objects.filter(content_type__app_label__in=rbac_services.TENANT_APPS).select_related(
        "content_type"
    )
    return sorted(((f"{p.content_type.app_label}.{p.codename}", p) for p in perms), key=lambda item: item[0])


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
        .annotate(
            permission_count=Count("permissions", distinct=True),
            member_count=Count("memberships", filter=Q(memberships__organization__in=visible), distinct=True),
        )
        .order_by("organization_id", "name")[:200]
    )
    custom_ids = [r.pk for r in roles if r.organization_id is not None]
    deletable = (
        set(
            Role.objects.filter(pk__in=custom_ids)
            .restrict(page_principal(request), "delete")
            .values_list("pk", flat=True)
        )
        if custom_ids
        else set()
    )
    create_orgs = list(page_organizations_allowing(request, "add", Role).order_by("name"))
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    if create_orgs:
        for name, perm in _tenant_permission_names():
            groups[f"{perm.content_type.app_label} · {perm.content_type.name}"].append((name, perm.codename))
    context = {
        **people_page_context(request, "console:member-roles"),
        "roles": [{"role": r, "may_delete": r.pk in deletable} for r in roles],
        "create_orgs": create_orgs,
        "permission_groups": sorted(groups.items()),
    }
    return render(request, "console/members/roles.html", context)


@login_required
@require_POST
def role_create_view(request: HttpRequest) -> HttpResponse:
    form = RoleCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A role needs a name, a slug and known permissions.")
        return redirect("console:member-roles")
    values = form.cleaned_data
    organization = require_may_add(request, Role, values["organization"])
    if not page_principal(request).is_superadmin:
        held = {
            f"{p.content_type.app_label}.{p.codename}"
            for p in Permission.objects.filter(
                inferia_roles__memberships__user=request.user, inferia_roles__memberships__organization=organization
            ).select_related("content_type")
        }
        beyond = set(values["permissions"]) - held
        if beyond:
            raise PermissionDenied("You may not compose a role with permissions you do not hold.")
    role, error = service_run(
        rbac_services.role_create,
        organization=organization,
        slug=values["slug"],
        name=values["name"],
        description=values["description"],
        permissions=values["permissions"],
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Role {role.name} created with {len(values['permissions'])} permissions.")
    return redirect("console:member-roles")


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
