"""The guardrail profiles tab of the policies pages: profiles listed, created and edited through
`apps.policies.services` (validated, audited, published to every gateway)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from apps.console.pages.policies import policy_tabs
from apps.console.pages.support import (
    json_fields_clean,
    keyset_page,
    organization_current,
    organization_current_slug,
    organizations_visible,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.policies import services as policy_services
from apps.policies.models import GuardrailProfile


class ProfileForm(forms.Form):
    """A guardrail profile: JSON for the category actions, patterns and scanners; one blocklist entry a line."""

    name = forms.CharField(label="Name", max_length=200)
    description = forms.CharField(label="Description", required=False, widget=forms.Textarea)
    input_actions = forms.CharField(label="Input actions (JSON)", required=False, widget=forms.Textarea)
    output_actions = forms.CharField(label="Output actions (JSON)", required=False, widget=forms.Textarea)
    blocklist = forms.CharField(label="Blocklist (one a line)", required=False, widget=forms.Textarea)
    patterns = forms.CharField(label="Patterns (JSON)", required=False, widget=forms.Textarea)
    scanners = forms.CharField(label="Scanners (JSON)", required=False, widget=forms.Textarea)

    JSON_FIELDS = {"input_actions": dict, "output_actions": dict, "patterns": list, "scanners": list}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        json_fields_clean(self, cleaned, self.JSON_FIELDS)
        cleaned["blocklist"] = [line.strip() for line in (cleaned.get("blocklist") or "").splitlines() if line.strip()]
        return cleaned

    def profile_fields(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in policy_services.PROFILE_FIELDS}

    @classmethod
    def initial_from(cls, profile: GuardrailProfile) -> dict[str, Any]:
        return {
            "name": profile.name,
            "description": profile.description,
            "input_actions": json.dumps(profile.input_actions, indent=2),
            "output_actions": json.dumps(profile.output_actions, indent=2),
            "blocklist": "\n".join(profile.blocklist),
            "patterns": json.dumps(profile.patterns, indent=2),
            "scanners": json.dumps(profile.scanners, indent=2),
        }


@never_cache
@login_required
@require_GET
def profiles_view(request: HttpRequest) -> HttpResponse:
    principal = page_principal(request)
    current = organization_current(request)
    profiles = GuardrailProfile.objects.restrict(principal).filter(
        Q(organization__isnull=True) | Q(organization_id=current.pk if current is not None else None)
    )
    page = keyset_page(profiles.select_related("organization"), request=request)
    context = {
        "tabs": policy_tabs("console:policy-profiles"),
        "rows": page.rows,
        "page": page,
        "query": query_without(request, "older", "newer"),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "may_create": page_organizations_allowing(request, "add", GuardrailProfile).exists(),
    }
    return render(request, "console/policies/profiles.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile_create_view(request: HttpRequest) -> HttpResponse:
    create_orgs = list(page_organizations_allowing(request, "add", GuardrailProfile).order_by("name"))
    if request.method == "POST":
        organization = require_may_add(request, GuardrailProfile, request.POST.get("organization"))
        form = ProfileForm(request.POST)
        if form.is_valid():
            profile, error = service_run(
                policy_services.guardrail_profile_create,
                actor=request.user,
                organization=organization,
                context=page_audit_context(request),
                **form.profile_fields(),
            )
            if not error:
                messages.success(request, f"Guardrail profile {profile.name} created.")
                return redirect("console:policy-profile-edit", pk=profile.pk)
            messages.error(request, error)
    else:
        if not create_orgs:
            return redirect("console:policy-profiles")
        form = ProfileForm(initial={"input_actions": "{}", "output_actions": "{}", "patterns": "[]", "scanners": "[]"})
    context = {
        "tabs": policy_tabs("console:policy-profiles"),
        "form": form,
        "create_orgs": create_orgs,
        "profile": None,
        "may_change": True,
    }
    return render(request, "console/policies/profile_edit.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    action = "change" if request.method == "POST" else "view"
    profile = tenant_object(
        GuardrailProfile.objects.select_related("organization"), request=request, pk=pk, action=action
    )
    may_change = profile.organization_id is not None or page_principal(request).is_superadmin
    may_change = (
        may_change
        and GuardrailProfile.objects.filter(pk=profile.pk).restrict(page_principal(request), "change").exists()
    )
    if request.method == "POST":
        form = ProfileForm(request.POST)
        if form.is_valid():
            _, error = service_run(
                policy_services.guardrail_profile_update,
                profile=profile,
                actor=request.user,
                changes=form.profile_fields(),
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, "Guardrail profile saved; gateways apply it within a second.")
                return redirect("console:policy-profile-edit", pk=profile.pk)
            messages.error(request, error)
    else:
        form = ProfileForm(initial=ProfileForm.initial_from(profile))
    context = {
        "tabs": policy_tabs("console:policy-profiles"),
        "form": form,
        "profile": profile,
        "may_change": may_change,
        "create_orgs": [],
    }
    return render(request, "console/policies/profile_edit.html", context)
