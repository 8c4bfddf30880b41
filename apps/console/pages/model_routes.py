"""The model routes page: the current organisation's routes (a served name split over deployments by weight, with
fallbacks), and for who may change deployments the forms to create one, change its weights and fallbacks, or delete
it. Writes go through the compute route services with the signed-in user as actor (each records its audit event);
the gateways follow within a second.

Splits are written one per line as `DEPLOYMENT=WEIGHT`, fallbacks one served name per line. Who may not change
routes sees no forms, and the server answers a forged POST with 403 (404 when the route is not even visible)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.compute.models import ModelRoute
from apps.compute.route_services import (
    FALLBACKS_MAX,
    SPLIT_TARGETS_MAX,
    SplitTarget,
    model_route_create,
    model_route_delete,
    model_route_snapshot,
    model_route_update,
)
from apps.console.pages.support import (
    form_errors_tell,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    require_may_add,
    service_announce,
    service_run,
    tenant_object,
)
from apps.console.scope import org_scope_get

_LINES_MAX = 2000  # characters in each text box: more than the bounded number of lines can need


class ModelRouteForm(forms.Form):
    """A route's name, splits (`DEPLOYMENT=WEIGHT` per line) and fallbacks (a served name per line). The service
    checks the names, weights and bounds again; the form gives the clear message for the shape."""

    name = forms.CharField(label="Model name clients ask for", max_length=200)
    splits = forms.CharField(label="Splits", max_length=_LINES_MAX, widget=forms.Textarea)
    fallbacks = forms.CharField(label="Fallbacks", max_length=_LINES_MAX, required=False, widget=forms.Textarea)

    def clean_splits(self) -> list[SplitTarget]:
        lines = [line.strip() for line in self.cleaned_data["splits"].splitlines() if line.strip()]
        if not 1 <= len(lines) <= SPLIT_TARGETS_MAX:
            raise forms.ValidationError(f"Give 1 to {SPLIT_TARGETS_MAX} lines of DEPLOYMENT=WEIGHT.")
        targets = []
        for line in lines:
            name, sep, weight = line.rpartition("=")
            if not sep or not name.strip() or not weight.strip().isdigit():
                raise forms.ValidationError(f"{line!r}: write DEPLOYMENT=WEIGHT, the weight a whole number.")
            targets.append(SplitTarget(deployment=name.strip(), weight=int(weight.strip())))
        return targets

    def clean_fallbacks(self) -> list[str]:
        names = [line.strip() for line in self.cleaned_data["fallbacks"].splitlines() if line.strip()]
        if len(names) > FALLBACKS_MAX:
            raise forms.ValidationError(f"At most {FALLBACKS_MAX} fallbacks.")
        return names


def _as_lines(snapshot: dict[str, Any]) -> dict[str, str]:
    return {
        "splits_lines": "\n".join(f"{split['deployment']}={split['weight']}" for split in snapshot["splits"]),
        "fallbacks_lines": "\n".join(fallback["deployment"] for fallback in snapshot["fallbacks"]),
    }


@login_required
@require_GET
def model_routes_view(request: HttpRequest) -> HttpResponse:
    scope = org_scope_get(request, model=ModelRoute, action="view")
    organization = scope.organization
    routes = (
        ModelRoute.objects.restrict(page_principal(request), "view")
        .filter(organization=organization)
        .prefetch_related("targets__deployment")
        if organization is not None
        else ModelRoute.objects.none()
    )
    changeable = set(
        ModelRoute.objects.restrict(page_principal(request), "change")
        .filter(organization=organization)
        .values_list("pk", flat=True)
    )
    rows = []
    for route in routes:
        snapshot = model_route_snapshot(route)
        rows.append({"route": route, **snapshot, **_as_lines(snapshot), "may_change": route.pk in changeable})
    may_add = (
        organization is not None
        and page_organizations_allowing(request, "add", ModelRoute).filter(pk=organization.pk).exists()
    )
    return render(
        request,
        "console/deployments/routes.html",
        {"routes": rows, "scope": scope, "may_add": may_add},
    )


def _back(organization_slug: str) -> HttpResponse:
    return redirect(f"{reverse('console:deployment-routes')}?org={organization_slug}")


@login_required
@require_POST
def model_route_create_view(request: HttpRequest) -> HttpResponse:
    organization = require_may_add(request, ModelRoute, request.POST.get("organization"))
    form = ModelRouteForm(request.POST)
    if not form.is_valid():
        form_errors_tell(request, form)
        return _back(organization.slug)
    route, error = service_run(
        model_route_create,
        organization=organization,
        name=form.cleaned_data["name"].strip(),
        splits=form.cleaned_data["splits"],
        fallbacks=form.cleaned_data["fallbacks"],
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    if route is None:
        messages.error(request, error or "The route could not be created.")
    else:
        messages.success(request, f"Routing {route.name}: every web process follows within a second.")
    return _back(organization.slug)


@login_required
@require_POST
def model_route_update_view(request: HttpRequest, pk: int) -> HttpResponse:
    route = tenant_object(ModelRoute.objects.select_related("organization"), request=request, pk=pk, action="change")
    form = ModelRouteForm(request.POST)
    if not form.is_valid():
        form_errors_tell(request, form)
        return _back(route.organization.slug)
    changed, error = service_run(
        model_route_update,
        route=route,
        name=form.cleaned_data["name"].strip(),
        splits=form.cleaned_data["splits"],
        fallbacks=form.cleaned_data["fallbacks"],
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    if changed is None:
        messages.error(request, error or "The route could not be changed.")
    else:
        messages.success(request, f"Changed {changed.name}: every web process follows within a second.")
    return _back(route.organization.slug)


@login_required
@require_POST
def model_route_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    route = tenant_object(ModelRoute.objects.select_related("organization"), request=request, pk=pk, action="delete")
    slug, name = route.organization.slug, route.name
    service_announce(
        request,
        model_route_delete,
        success=f"Deleted the route {name}; its deployments keep serving under their own names.",
        route=route,
        actor=page_principal(request).actor,
        context=page_audit_context(request),
    )
    return _back(slug)
