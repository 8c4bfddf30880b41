"""The people pages: members (change role, remove), invitations by link (shown once), teams, and roles (compose a
custom role from permissions). Writes go through `apps.orgs.services` and `apps.rbac.services`; nobody
hands out, or takes away, a role with more rights than their own (`role_within_reach`)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.support import (
    keyset_page,
    organization_current,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.keys.services import membership_offboard
from apps.orgs import services as org_services
from apps.orgs.models import Invitation, Membership, Organization, Team
from apps.rbac import services as rbac_services
from apps.rbac.models import Role
from apps.rbac.restrict import role_within_reach

SESSION_INVITE_LINK = "inferia_console_invitation_link"


class TeamCreateForm(forms.Form):
    organization = forms.IntegerField()
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=64)


class InvitationCreateForm(forms.Form):
    organization = forms.IntegerField()
    email = forms.EmailField(max_length=254)
    role = forms.IntegerField()
    expires_in_days = forms.IntegerField(min_value=1, max_value=30, initial=7)


class MembershipRoleForm(forms.Form):
    role = forms.IntegerField()


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


def _roles_visible(request: HttpRequest) -> QuerySet[Role]:
    return Role.objects.restrict(page_principal(request))


def _roles_within_reach(request: HttpRequest, organizations: list[Organization]) -> dict[int, list[Role]]:
    """Per organisation, the roles the user may hand out there: built-in and that organisation's own roles whose
    every permission the user holds there (one query per organisation, not per role)."""
    principal = page_principal(request)
    reach: dict[int, list[Role]] = {}
    for organization in organizations:
        roles = _roles_visible(request).filter(Q(organization__isnull=True) | Q(organization=organization))
        if not principal.is_superadmin:
            held = Membership.objects.filter(user=request.user, organization=organization).values("role__permissions")
            roles = roles.exclude(permissions__in=Permission.objects.exclude(pk__in=held))
        reach[organization.pk] = list(roles.order_by("organization_id", "name"))
    return reach


def _tabs(request: HttpRequest, current: str) -> list[dict[str, Any]]:
    return [
        {"url": reverse(name), "label": label, "current": name == current}
        for name, label in (
            ("console:members", "Members"),
            ("console:member-invitations", "Invitations"),
            ("console:member-teams", "Teams"),
            ("console:member-roles", "Roles"),
        )
    ]


def _common(request: HttpRequest, current: str) -> dict[str, Any]:
    return {
        "tabs": _tabs(request, current),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
    }


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
    reach = _roles_within_reach(request, list(Organization.objects.filter(pk__in=org_ids))) if org_ids else {}
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
        **_common(request, "console:members"),
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
    role = _roles_visible(request).filter(pk=form.cleaned_data["role"]).first() if form.is_valid() else None
    if role is None:
        messages.error(request, "Choose one of the roles listed.")
        return redirect("console:members")
    principal = page_principal(request)
    for checked in (membership.role, role):
        if not role_within_reach(principal=principal, role=checked, organization=membership.organization):
            raise PermissionDenied("You may not assign or take away a role with more rights than your own.")
    _, error = service_run(
        org_services.membership_update,
        membership=membership,
        role=role,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"{membership.user.email} is now {role.name} in {membership.organization.name}.")
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


@never_cache
@login_required
@require_GET
def invitations_view(request: HttpRequest) -> HttpResponse:
    invitations, _ = organization_filter(request, Invitation.objects.restrict(page_principal(request)))
    page = keyset_page(invitations.select_related("organization", "role", "invited_by"), request=request)
    ids = [i.pk for i in page.rows]
    revocable = (
        set(
            Invitation.objects.filter(pk__in=ids)
            .restrict(page_principal(request), "delete")
            .values_list("pk", flat=True)
        )
        if ids
        else set()
    )
    now = timezone.now()
    rows = [
        {
            "invitation": i,
            "state": "accepted"
            if i.accepted_at
            else "withdrawn"
            if i.revoked_at
            else "expired"
            if i.expires_at <= now
            else "pending",
            "may_revoke": i.pk in revocable and not i.accepted_at and not i.revoked_at,
        }
        for i in page.rows
    ]
    create_orgs = list(page_organizations_allowing(request, "add", Invitation).order_by("name"))
    context = {
        **_common(request, "console:member-invitations"),
        "rows": rows,
        "page": page,
        "query": query_without(request, "older", "newer"),
        "create_orgs": create_orgs,
        "reach": _roles_within_reach(request, create_orgs),
        "link": request.session.pop(SESSION_INVITE_LINK, None),
    }
    return render(request, "console/members/invitations.html", context)


@login_required
@require_POST
def invitation_create_view(request: HttpRequest) -> HttpResponse:
    form = InvitationCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give an e-mail address, a role and a lifetime of 1 to 30 days.")
        return redirect("console:member-invitations")
    values = form.cleaned_data
    organization = require_may_add(request, Invitation, values["organization"])
    role = _roles_visible(request).filter(pk=values["role"]).first()
    if role is None:
        messages.error(request, "Choose one of the roles listed.")
        return redirect("console:member-invitations")
    if not role_within_reach(principal=page_principal(request), role=role, organization=organization):
        raise PermissionDenied("You may not invite someone with more rights than your own.")
    created, error = service_run(
        org_services.invitation_create,
        organization=organization,
        email=values["email"],
        role=role,
        lifetime=timedelta(days=values["expires_in_days"]),
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
        return redirect("console:member-invitations")
    invitation, token = created
    request.session[SESSION_INVITE_LINK] = {
        "url": request.build_absolute_uri(reverse("console:member-invitation-accept", args=[token])),
        "email": invitation.email,
    }
    return redirect("console:member-invitations")


@login_required
@require_POST
def invitation_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = tenant_object(Invitation.objects.all(), request=request, pk=pk, action="delete")
    _, error = service_run(
        org_services.invitation_revoke,
        invitation=invitation,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"The invitation for {invitation.email} was withdrawn.")
    return redirect("console:member-invitations")


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def invitation_accept_view(request: HttpRequest, token: str) -> HttpResponse:
    """Where an invitation link lands: the invited person, signed in, joins the organisation."""
    if request.method == "POST":
        membership, error = service_run(
            org_services.invitation_accept, token=token, user=request.user, context=page_audit_context(request)
        )
        if not error:
            messages.success(request, f"Welcome to {membership.organization.name}.")
            return redirect("console:home")
        messages.error(request, error)
    return render(request, "console/members/accept.html", {"token": token, "email": request.user.email})


@never_cache
@login_required
@require_GET
def teams_view(request: HttpRequest) -> HttpResponse:
    teams, _ = organization_filter(request, Team.objects.restrict(page_principal(request)))
    page = keyset_page(
        teams.select_related("organization").annotate(member_count=Count("memberships", distinct=True)),
        request=request,
    )
    ids = [t.pk for t in page.rows]
    deletable = (
        set(Team.objects.filter(pk__in=ids).restrict(page_principal(request), "delete").values_list("pk", flat=True))
        if ids
        else set()
    )
    context = {
        **_common(request, "console:member-teams"),
        "rows": [{"team": t, "may_delete": t.pk in deletable} for t in page.rows],
        "page": page,
        "query": query_without(request, "older", "newer"),
        "create_orgs": list(page_organizations_allowing(request, "add", Team).order_by("name")),
    }
    return render(request, "console/members/teams.html", context)


@login_required
@require_POST
def team_create_view(request: HttpRequest) -> HttpResponse:
    form = TeamCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A team needs a name and a slug (letters, digits, '-' and '_').")
        return redirect("console:member-teams")
    organization = require_may_add(request, Team, form.cleaned_data["organization"])
    team, error = service_run(
        org_services.team_create,
        organization=organization,
        name=form.cleaned_data["name"],
        slug=form.cleaned_data["slug"],
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Team {team.name} created.")
    return redirect("console:member-teams")


@login_required
@require_POST
def team_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    team = tenant_object(Team.objects.all(), request=request, pk=pk, action="delete")
    _, error = service_run(org_services.team_delete, team=team, actor=request.user, context=page_audit_context(request))
    if error:
        messages.error(request, error)
    else:
        messages.success(request, f"Team {team.name} deleted.")
    return redirect("console:member-teams")


@never_cache
@login_required
@require_GET
def roles_view(request: HttpRequest) -> HttpResponse:
    roles = _roles_visible(request)
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
        **_common(request, "console:member-roles"),
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
