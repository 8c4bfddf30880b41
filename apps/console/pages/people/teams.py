"""The teams tab: an organisation's teams, creating and deleting them."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from apps.console.pages.people.tabs import people_page_context
from apps.console.pages.support import (
    keyset_page,
    organization_filter,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.orgs import services as org_services
from apps.orgs.models import Team


class TeamCreateForm(forms.Form):
    organization = forms.IntegerField()
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(max_length=64)


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
