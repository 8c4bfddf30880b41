"""The policies pages: policies at organisation, team and key level (limits, budgets, model allow-lists, guardrail
profile), listed, created and edited through `apps.policies.services` (audited, published to every gateway).
Guardrail profiles, the other tab, are in `guardrail_profiles.py`."""

from __future__ import annotations

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

from apps.console.deployment_selectors import deployment_priciest
from apps.console.money_field import MoneyField
from apps.console.pages.support import (
    create_organizations,
    keyset_page,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_audit_context,
    page_principal,
    query_without,
    require_may_add,
    service_run,
    tenant_object,
)
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.policies import services as policy_services
from apps.policies.costs import cost_micros_for
from apps.policies.models import FlaggedChunks, GuardrailProfile, Policy
from inferia_runtime.money import money_currency, money_format

LIMIT_LABELS = {
    "requests_per_minute": "Requests per minute",
    "tokens_per_minute": "Tokens per minute",
    "concurrent_requests": "Concurrent requests",
    "max_tokens_per_request": "Max tokens per request",
    "tokens_per_day": "Tokens per day",
    "tokens_per_month": "Tokens per month",
    # The organisation's whole knowledge store, whichever level sets them (the tightest applies).
    "knowledge_bytes_max": "Knowledge storage (bytes)",
    "knowledge_chunks_max": "Knowledge chunks",
    # Deployments charged to the organisation or team; a key's policy leaves it empty.
    "gpus_max": "GPUs at once",
}
# Budgets are typed in the currency ("5" is five units) and stored in micro-units: form field -> policy field.
# The form's names differ from the policy's on purpose, so that nothing still posting micro-units is read as money.
BUDGET_FIELDS = {"budget_per_day": "budget_per_day_micros", "budget_per_month": "budget_per_month_micros"}
BUDGET_LABELS = {"budget_per_day": "Budget per day", "budget_per_month": "Budget per month"}


class PolicyForm(forms.Form):
    """What a policy form sends: the limits (empty: no limit at this level), budgets in the currency, allow-list
    and profile."""

    enabled = forms.BooleanField(label="Enabled", required=False, initial=True)
    allowed_models = forms.CharField(label="Allowed models", required=False, max_length=4000)
    guardrail_profile = forms.IntegerField(label="Guardrail profile", required=False)
    # A form that leaves it out gets the safe default (kept out), never whatever the policy said before.
    knowledge_flagged_chunks = forms.ChoiceField(
        label="Flagged knowledge chunks", choices=FlaggedChunks.choices, required=False
    )
    # Shown on an organisation's policy only (the only level that may store responses); elsewhere it stays off.
    responses_store = forms.BooleanField(label="Store /v1/responses answers", required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, label in LIMIT_LABELS.items():
            self.fields[name] = forms.IntegerField(label=label, required=False, min_value=0)
        currency = money_currency()
        for name, label in BUDGET_LABELS.items():
            self.fields[name] = MoneyField(label=f"{label} ({currency})")

    def policy_fields(self, profile: GuardrailProfile | None) -> dict[str, Any]:
        values = self.cleaned_data
        models = [name.strip() for name in values["allowed_models"].replace("\n", ",").split(",") if name.strip()]
        return {
            "enabled": values["enabled"],
            "allowed_models": models,
            "guardrail_profile": profile,
            "knowledge_flagged_chunks": values["knowledge_flagged_chunks"] or FlaggedChunks.EXCLUDE,
            "responses_store": values["responses_store"],
            **{name: values[name] for name in LIMIT_LABELS},
            **{field: values[name] for name, field in BUDGET_FIELDS.items()},
        }

    @staticmethod
    def initial_from(policy: Policy) -> dict[str, Any]:
        """The form's initial values for an existing policy (budgets as micro-units; the field shows them as
        amounts)."""
        return {
            "enabled": policy.enabled,
            "allowed_models": ", ".join(policy.allowed_models),
            "guardrail_profile": policy.guardrail_profile_id,
            "knowledge_flagged_chunks": policy.knowledge_flagged_chunks,
            "responses_store": policy.responses_store,
            **{name: getattr(policy, name) for name in LIMIT_LABELS},
            **{name: getattr(policy, field) for name, field in BUDGET_FIELDS.items()},
        }


class PolicyCreateForm(PolicyForm):
    organization = forms.IntegerField()
    level = forms.ChoiceField(choices=[("org", "Organisation"), ("team", "Team"), ("key", "Key")])
    team = forms.IntegerField(required=False)
    key = forms.CharField(required=False, max_length=64)


# The request a budget warning prices: a typical chat turn, as explainable as a reference can be.
REFERENCE_PROMPT_TOKENS = 1_000
REFERENCE_COMPLETION_TOKENS = 500


def budget_warning(*, organization_id: int, fields: dict[str, Any]) -> str | None:
    """A warning (the policy is saved anyway) when a budget is below what one reference request (1,000 prompt +
    500 completion tokens) costs on the most expensive deployment the organisation's keys can reach: such a budget
    refuses most requests at once. None when no budget is set, none is that low, or no deployment has a price."""
    budgets = {field: fields.get(field) for field in BUDGET_FIELDS.values() if fields.get(field) is not None}
    if not budgets:
        return None
    deployment = deployment_priciest(
        organization_id=organization_id,
        prompt_tokens=REFERENCE_PROMPT_TOKENS,
        completion_tokens=REFERENCE_COMPLETION_TOKENS,
    )
    if deployment is None:
        return None
    cost = cost_micros_for(
        prompt_tokens=REFERENCE_PROMPT_TOKENS,
        completion_tokens=REFERENCE_COMPLETION_TOKENS,
        price_input_per_mtok_micros=deployment.price_input_per_mtok_micros,
        price_output_per_mtok_micros=deployment.price_output_per_mtok_micros,
    )
    low = [field for field, micros in budgets.items() if micros < cost]
    if not low:
        return None
    names = " and ".join(
        f"the budget per {'day' if field == 'budget_per_day_micros' else 'month'} ({money_format(budgets[field])})"
        for field in low
    )
    return (
        f"Saved, but {names} is below what one request of {REFERENCE_PROMPT_TOKENS:,} prompt and "
        f"{REFERENCE_COMPLETION_TOKENS:,} completion tokens costs on {deployment.served_model_name} "
        f"({money_format(cost)}), the most expensive model this organisation's keys can use: such requests will be "
        "refused with 429 budget_exceeded."
    )


def form_errors(form: forms.Form) -> str:
    return "; ".join(f"{'' if k == '__all__' else k + ': '}{' '.join(v)}" for k, v in form.errors.items())


def policy_tabs(current: str) -> list[dict[str, Any]]:
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
    create_orgs = create_organizations(request, Policy)
    org_ids = [o.pk for o in create_orgs]
    context = {
        "tabs": policy_tabs("console:policies"),
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
        "budget_fields": [PolicyForm()[name] for name in BUDGET_LABELS],
        "flagged_choices": FlaggedChunks.choices,
    }
    return render(request, "console/policies/list.html", context)


@login_required
@require_POST
def policy_create_view(request: HttpRequest) -> HttpResponse:
    form = PolicyCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the policy: " + form_errors(form))
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
    fields = form.policy_fields(profile)
    policy, error = service_run(
        policy_services.policy_create,
        actor=request.user,
        organization=organization,
        team=team,
        api_key=api_key,
        context=page_audit_context(request),
        **fields,
    )
    if error:
        messages.error(request, error)
        return redirect("console:policies")
    messages.success(request, f"Policy of the {policy.target_label} created.")
    warning = budget_warning(organization_id=organization.pk, fields=fields)
    if warning:
        messages.warning(request, warning)
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
            fields = form.policy_fields(profile)
            _, error = service_run(
                policy_services.policy_update,
                policy=policy,
                actor=request.user,
                changes=fields,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, "Policy saved; gateways apply it within a second.")
                warning = budget_warning(organization_id=policy.organization_id, fields=fields)
                if warning:
                    messages.warning(request, warning)
                return redirect("console:policy-edit", pk=policy.pk)
            messages.error(request, error)
        else:
            messages.error(request, "Check the policy: " + form_errors(form))
    else:
        form = PolicyForm(initial=PolicyForm.initial_from(policy))
    context = {
        "tabs": policy_tabs("console:policies"),
        "policy": policy,
        "form": form,
        "may_change": may_change,
        "may_delete": Policy.objects.filter(pk=policy.pk).restrict(principal, "delete").exists(),
        "profiles": list(_profiles_for(request, [policy.organization_id])),
        "limit_fields": [form[name] for name in LIMIT_LABELS],
        "budget_fields": [form[name] for name in BUDGET_LABELS],
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
