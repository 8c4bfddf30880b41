"""The members tab: who belongs to the organisation, changing a member's role, and removing a member (their keys
there are revoked with it)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.pages.people.tabs import people_page_context, roles_visible, roles_within_reach_by_org
from apps.console.pages.support import (
    keyset_page,
    organization_filter,
    page_audit_context,
    page_principal,
    query_without,
    service_announce,
    service_run,
    tenant_object,
)
from apps.keys.services import membership_offboard
from apps.orgs import services as org_services
from apps.orgs.models import Membership, Organization
from apps.rbac.restrict import role_within_reach


class MembershipRoleForm(forms.Form):
    role = forms.IntegerField()


@never_cache
@login_required
@require_GET
def members_view(request: HttpRequest) -> HttpResponse:
    principal = page_principal(request)
    memberships, _ = organization_filter(request, Membership.objects.restrict(principal))
    query = request.GET.get("q", "").strip()
    if query:
        memberships = memberships.filter(Q(user__email__icontains=query) | Q(user__full_name__icontains=query))
    page = keyset_page(
        memberships.select_related("user", "role", "organization").prefetch_related("teams"), request=request
    )
    ids = [m.pk for m in page.rows]
    changeable = (
        set(Membership.objects.filter(pk__in=ids).restrict(principal, "change").values_list("pk", flat=True))
        if ids
        else set()
    )
    removable = (
        set(Membership.objects.filter(pk__in=ids).restrict(principal, "delete").values_list("pk", flat=True))
        if ids
        else set()
    )
    org_ids = {m.organization_id for m in page.rows if m.pk in changeable}
    reach = roles_within_reach_by_org(request, list(Organization.objects.filter(pk__in=org_ids))) if org_ids else {}
    rows = [
        {
            "membership": m,
            "is_self": m.user_id == request.user.pk,
            "roles": reach.get(m.organization_id, []) if m.pk in changeable else [],
            "may_change": m.pk in changeable,
            "may_remove": m.pk in removable and m.user_id != request.user.pk,
        }
        for m in page.rows
    ]
    context = {
        **people_page_context(request, "console:members"),
        "rows": rows,
        "page": page,
        "q": query,
        "query": query_without(request, "older", "newer"),
    }
    return render(request, "console/members/members.html", context)


@login_required
@require_POST
def member_role_view(request: HttpRequest, pk: int) -> HttpResponse:
    membership = tenant_object(
        Membership.objects.select_related("organization", "role", "user"), request=request, pk=pk, action="change"
    )
    form = MembershipRoleForm(request.POST)
    role = roles_visible(request).filter(pk=form.cleaned_data["role"]).first() if form.is_valid() else None
    if role is None:
        messages.error(request, "Choose one of the roles listed.")
        return redirect("console:members")
    principal = page_principal(request)
    for checked in (membership.role, role):
        if not role_within_reach(principal=principal, role=checked, organization=membership.organization):
            raise PermissionDenied("You may not assign or take away a role with more rights than your own.")
    service_announce(
        request,
        org_services.membership_update,
        membership=membership,
        role=role,
        actor=request.user,
        context=page_audit_context(request),
        success=f"{membership.user.email} is now {role.name} in {membership.organization.name}.",
    )
    return redirect("console:members")


@login_required
@require_POST
def member_remove_view(request: HttpRequest, pk: int) -> HttpResponse:
    membership = tenant_object(
        Membership.objects.select_related("organization", "role", "user"), request=request, pk=pk, action="delete"
    )
    if not role_within_reach(
        principal=page_principal(request), role=membership.role, organization=membership.organization
    ):
        raise PermissionDenied("You may not remove a member whose role has more rights than your own.")
    revoked, error = service_run(
        membership_offboard,
        membership=membership,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{membership.user.email} was removed; {revoked} of their keys were revoked.")
    return redirect("console:members")
