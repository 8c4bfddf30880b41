"""The policies pages: policies at organisation, team and key level (limits, budgets, model allow-lists, guardrail
profile) and guardrail profiles, listed, created and edited through `apps.policies.services` (audited, published to
every gateway)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.support import (
    json_fields_clean,
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
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.policies import services as policy_services
from apps.policies.models import GuardrailProfile, Policy

LIMIT_LABELS = {
    "requests_per_minute": "Requests per minute",
    "tokens_per_minute": "Tokens per minute",
    "concurrent_requests": "Concurrent requests",
    "max_tokens_per_request": "Max tokens per request",
    "tokens_per_day": "Tokens per day",
    "tokens_per_month": "Tokens per month",
    "budget_per_day_micros": "Budget per day (micro-units)",
    "budget_per_month_micros": "Budget per month (micro-units)",
}


class PolicyForm(forms.Form):
    """What a policy form sends: the limits (empty: no limit at this level), allow-list and profile."""

    enabled = forms.BooleanField(label="Enabled", required=False, initial=True)
    allowed_models = forms.CharField(label="Allowed models", required=False, max_length=4000)
    guardrail_profile = forms.IntegerField(label="Guardrail profile", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, label in LIMIT_LABELS.items():
            self.fields[name] = forms.IntegerField(label=label, required=False, min_value=0)

    def policy_fields(self, profile: GuardrailProfile | None) -> dict[str, Any]:
        values = self.cleaned_data
        models = [name.strip() for name in values["allowed_models"].replace("\n", ",").split(",") if name.strip()]
        return {
            "enabled": values["enabled"],
            "allowed_models": models,
            "guardrail_profile": profile,
            **{name: values[name] for name in LIMIT_LABELS},
        }


class PolicyCreateForm(PolicyForm):
    organization = forms.IntegerField()
    level = forms.ChoiceField(choices=[("org", "Organisation"), ("team", "Team"), ("key", "Key")])
    team = forms.IntegerField(required=False)
    key = forms.CharField(required=False, max_length=64)


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


def _form_errors(form: forms.Form) -> str:
    return "; ".join(f"{'' if k == '__all__' else k + ': '}{' '.join(v)}" for k, v in form.errors.items())


def _tabs(current: str) -> list[dict[str, Any]]:
    return [
        {"url": reverse(name), "label": label, "current": name == current}
        for name, label in (("console:policies", "Policies"), ("console:policy-profiles", "Guardrail profiles"))
    ]


def _profiles_for(request: HttpRequest, organization_ids: Any) -> QuerySet[GuardrailProfile]:
    """Profiles a policy of these organisations may use: theirs and the platform's."""
    profiles = GuardrailProfile.objects.restrict(page_principal(request))
    return profiles.filter(Q(organization__isnull=True) | Q(organization_id__in=organization_ids)).order_by("name")


def _profile_choice(request: HttpRequest, organization_id: int, profile_id: int | None) -> GuardrailProfile | None:
    if not profile_id:
        return None
    return _profiles_for(request, [organization_id]).filter(pk=profile_id).first()


@never_cache
@login_required
@require_GET
def policies_view(request: HttpRequest) -> HttpResponse:
    principal = page_principal(request)
    policies, _ = organization_filter(request, Policy.objects.restrict(principal))
    level = request.GET.get("level", "")
    if level == "org":
        policies = policies.filter(team__isnull=True, api_key__isnull=True)
    elif level == "team":
        policies = policies.filter(team__isnull=False)
    elif level == "key":
        policies = policies.filter(api_key__isnull=False)
    page = keyset_page(policies.select_related("organization", "team", "api_key", "guardrail_profile"), request=request)
    ids = [p.pk for p in page.rows]
    changeable = (
        set(Policy.objects.filter(pk__in=ids).restrict(principal, "change").values_list("pk", flat=True))
        if ids
        else set()
    )
    create_orgs = list(page_organizations_allowing(request, "add", Policy).order_by("name"))
    org_ids = [o.pk for o in create_orgs]
    context = {
        "tabs": _tabs("console:policies"),
        "rows": [{"policy": p, "may_change": p.pk in changeable} for p in page.rows],
        "page": page,
        "level": level,
        "query": query_without(request, "older", "newer"),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "create_orgs": create_orgs,
        "teams": list(
            Team.objects.filter(organization_id__in=org_ids).restrict(principal).select_related("organization")
        )
        if create_orgs
        else [],
        "profiles": list(_profiles_for(request, org_ids)) if create_orgs else [],
        "limit_labels": LIMIT_LABELS,
    }
    return render(request, "console/policies/list.html", context)


@login_required
@require_POST
def policy_create_view(request: HttpRequest) -> HttpResponse:
    form = PolicyCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the policy: " + _form_errors(form))
        return redirect("console:policies")
    values = form.cleaned_data
    organization = require_may_add(request, Policy, values["organization"])
    principal = page_principal(request)
    team = api_key = None
    if values["level"] == "team":
        team = Team.objects.filter(organization=organization, pk=values["team"] or None).restrict(principal).first()
        if team is None:
            messages.error(request, "Choose one of the organisation's teams.")
            return redirect("console:policies")
    elif values["level"] == "key":
        ref = (values["key"] or "").strip()
        keys = ApiKey.objects.filter(organization=organization).restrict(principal)
        api_key = (keys.filter(pk=int(ref)) if ref.isdigit() else keys.filter(prefix=ref.rstrip("…"))).first()
        if api_key is None:
            messages.error(request, "No key of the organisation has that prefix or id.")
            return redirect("console:policies")
    profile = _profile_choice(request, organization.pk, values["guardrail_profile"])
    policy, error = service_run(
        policy_services.policy_create,
        actor=request.user,
        organization=organization,
        team=team,
        api_key=api_key,
        context=page_audit_context(request),
        **form.policy_fields(profile),
    )
    if error:
        messages.error(request, error)
        return redirect("console:policies")
    messages.success(request, f"Policy of the {policy.target_label} created.")
    return redirect("console:policy-edit", pk=policy.pk)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def policy_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    action = "change" if request.method == "POST" else "view"
    policy = tenant_object(
        Policy.objects.select_related("organization", "team", "api_key", "guardrail_profile"),
        request=request,
        pk=pk,
        action=action,
    )
    principal = page_principal(request)
    may_change = action == "change" or Policy.objects.filter(pk=policy.pk).restrict(principal, "change").exists()
    if request.method == "POST":
        form = PolicyForm(request.POST)
        if form.is_valid():
            profile = _profile_choice(request, policy.organization_id, form.cleaned_data["guardrail_profile"])
            _, error = service_run(
                policy_services.policy_update,
                policy=policy,
                actor=request.user,
                changes=form.policy_fields(profile),
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, "Policy saved; gateways apply it within a second.")
                return redirect("console:policy-edit", pk=policy.pk)
            messages.error(request, error)
        else:
            messages.error(request, "Check the policy: " + _form_errors(form))
    else:
        form = PolicyForm(
            initial={
                "enabled": policy.enabled,
                "allowed_models": ", ".join(policy.allowed_models),
                "guardrail_profile": policy.guardrail_profile_id,
                **{name: getattr(policy, name) for name in LIMIT_LABELS},
            }
        )
    context = {
        "tabs": _tabs("console:policies"),
        "policy": policy,
        "form": form,
        "may_change": may_change,
        "may_delete": Policy.objects.filter(pk=policy.pk).restrict(principal, "delete").exists(),
        "profiles": list(_profiles_for(request, [policy.organization_id])),
        "limit_fields": [form[name] for name in LIMIT_LABELS],
    }
    return render(request, "console/policies/edit.html", context)


@login_required
@require_POST
def policy_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    policy = tenant_object(Policy.objects.all(), request=request, pk=pk, action="delete")
    _, error = service_run(
        policy_services.policy_delete, policy=policy, actor=request.user, context=page_audit_context(request)
    )
    if error:
        messages.error(request, error)
        return redirect("console:policy-edit", pk=policy.pk)
    messages.success(request, "Policy deleted.")
    return redirect("console:policies")


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
        "tabs": _tabs("console:policy-profiles"),
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
        "tabs": _tabs("console:policy-profiles"),
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
        "tabs": _tabs("console:policy-profiles"),
        "form": form,
        "profile": profile,
        "may_change": may_change,
        "create_orgs": [],
    }
    return render(request, "console/policies/profile_edit.html", context)
