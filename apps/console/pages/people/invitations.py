"""The invitations tab: inviting by link (the link is shown once), withdrawing an invitation, and accepting one."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.people.tabs import people_page_context, roles_visible, roles_within_reach_by_org
from apps.console.pages.support import (
    create_organizations,
    keyset_page,
    organization_filter,
    page_audit_context,
    page_principal,
    query_without,
    require_may_add,
    service_announce,
    service_run,
    tenant_object,
)
from apps.orgs import services as org_services
from apps.orgs.models import Invitation
from apps.rbac.restrict import role_within_reach

SESSION_INVITE_LINK = "inferia_console_invitation_link"


class InvitationCreateForm(forms.Form):
    organization = forms.IntegerField()
    email = forms.EmailField(max_length=254)
    role = forms.IntegerField()
    expires_in_days = forms.IntegerField(min_value=1, max_value=30, initial=7)


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
    create_orgs = create_organizations(request, Invitation)
    context = {
        **people_page_context(request, "console:member-invitations"),
        "rows": rows,
        "page": page,
        "query": query_without(request, "older", "newer"),
        "create_orgs": create_orgs,
        "reach": roles_within_reach_by_org(request, create_orgs),
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
    role = roles_visible(request).filter(pk=values["role"]).first()
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
    service_announce(
        request,
        org_services.invitation_revoke,
        invitation=invitation,
        actor=request.user,
        context=page_audit_context(request),
        success=f"The invitation for {invitation.email} was withdrawn.",
    )
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
