"""The teams tab: an organisation's teams, creating (the slug derived from the name) and deleting them, and a
team's page where members of its organisation are added to it and taken out of it."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.pages.people.tabs import people_page_context
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
from apps.orgs.models import Membership, Team

# How many of the organisation's members the "add to team" list offers (by e-mail): a page, not a directory.
TEAM_CANDIDATES_SHOWN = 200


class TeamCreateForm(forms.Form):
    organization = forms.IntegerField()
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=64, required=False)


class TeamMemberForm(forms.Form):
    member = forms.IntegerField(min_value=1)


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
        **people_page_context(request, "console:member-teams"),
        "rows": [{"team": t, "may_delete": t.pk in deletable} for t in page.rows],
        "page": page,
        "query": query_without(request, "older", "newer"),
        "create_orgs": create_organizations(request, Team),
    }
    return render(request, "console/members/teams.html", context)


@login_required
@require_POST
def team_create_view(request: HttpRequest) -> HttpResponse:
    form = TeamCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A team needs a name; a slug, if given, is letters, digits, '-' and '_'.")
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
        return redirect("console:member-teams")
    messages.success(request, f"Team {team.name} created ({team.slug}).")
    return redirect("console:member-team", pk=team.pk)


@never_cache
@login_required
@require_GET
def team_view(request: HttpRequest, pk: int) -> HttpResponse:
    """A team, its members, and (for who may change it) adding its organisation's other members."""
    team = tenant_object(Team.objects.select_related("organization"), request=request, pk=pk, action="view")
    principal = page_principal(request)
    may_change = Team.objects.filter(pk=team.pk).restrict(principal, "change").exists()
    visible = Membership.objects.restrict(principal).filter(organization_id=team.organization_id)
    members = list(visible.filter(teams=team).select_related("user", "role").order_by("user__email")[:1000])
    candidates = (
        list(visible.exclude(teams=team).select_related("user").order_by("user__email")[: TEAM_CANDIDATES_SHOWN + 1])
        if may_change
        else []
    )
    context = {
        **people_page_context(request, "console:member-teams"),
        "team": team,
        "members": members,
        "candidates": candidates[:TEAM_CANDIDATES_SHOWN],
        "candidates_cut": len(candidates) > TEAM_CANDIDATES_SHOWN,
        "may_change": may_change,
    }
    return render(request, "console/members/team.html", context)


def _team_and_member(request: HttpRequest, pk: int, member_id: object) -> tuple[Team, Membership]:
    """The team `pk` the user may change, and the membership `member_id` of that team's organisation that they may
    see: a member of another organisation is not found (404), whatever the user sees elsewhere."""
    team = tenant_object(Team.objects.select_related("organization"), request=request, pk=pk, action="change")
    membership = (
        Membership.objects.restrict(page_principal(request))
        .filter(pk=member_id, organization_id=team.organization_id)
        .select_related("user")
        .first()
    )
    if membership is None:
        raise Http404
    return team, membership


@login_required
@require_POST
def team_member_add_view(request: HttpRequest, pk: int) -> HttpResponse:
    form = TeamMemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the members listed.")
        return redirect("console:member-team", pk=pk)
    team, membership = _team_and_member(request, pk, form.cleaned_data["member"])
    service_announce(
        request,
        org_services.team_member_add,
        team=team,
        membership=membership,
        actor=request.user,
        context=page_audit_context(request),
        success=f"{membership.user.email} joined {team.name}.",
    )
    return redirect("console:member-team", pk=team.pk)


@login_required
@require_POST
def team_member_remove_view(request: HttpRequest, pk: int, member: int) -> HttpResponse:
    team, membership = _team_and_member(request, pk, member)
    service_announce(
        request,
        org_services.team_member_remove,
        team=team,
        membership=membership,
        actor=request.user,
        context=page_audit_context(request),
        success=f"{membership.user.email} left {team.name}.",
    )
    return redirect("console:member-team", pk=team.pk)


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
