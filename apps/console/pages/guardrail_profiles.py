"""The guardrail profiles tab of the policies pages: profiles listed, created and edited through
`apps.policies.services` (validated, audited, published to every gateway), and tried out on a pasted text.

A profile is edited as a list of categories (every detector category, with what it finds) and an action for each,
on input and on streamed output; custom patterns and scanner classes stay JSON under "advanced". The built-in
profile (what applies where no policy names one and no platform default exists) is shown read-only."""

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
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.policies import policy_tabs
from apps.console.pages.support import (
    create_organizations,
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
from apps.policies.guardrails import (
    DEFAULT_PROFILE_CONFIG,
    TrialResult,
    guardrail_categories,
    guardrail_profile_compile,
    guardrail_profile_trial,
)
from apps.policies.guardrails.engine import INPUT_ACTIONS, OFF, OUTPUT_ACTIONS
from apps.policies.guardrails.toxicity import DEFAULT_THRESHOLD, MAX_THRESHOLD, MIN_THRESHOLD
from apps.policies.models import GuardrailProfile
from apps.policies.selectors import guardrail_profile_default

# The longest text the "test this text" box scans (UTF-8 bytes): a long prompt, not a document.
TRIAL_MAX_BYTES = 16 * 1024
_CATEGORY_LABELS = {"email": "E-mail", "iban": "IBAN", "national_id": "National ID", "ip_address": "IP address"}
_ACTION_LABELS = {"off": "Off", "flag": "Flag", "redact": "Redact", "block": "Block", "stop": "Stop the stream"}


class ProfileForm(forms.Form):
    """A guardrail profile: an input and an output action per category, a blocklist (one entry a line), and JSON
    for the custom patterns and scanner classes. Categories the form does not list (a pattern's `custom:...`) are
    kept as they are (`kept_input`, `kept_output`)."""

    name = forms.CharField(label="Name", max_length=200)
    description = forms.CharField(label="Description", required=False, max_length=2000, widget=forms.Textarea)
    blocklist = forms.CharField(label="Blocklist (one a line)", required=False, max_length=20000, widget=forms.Textarea)
    patterns = forms.CharField(label="Patterns (JSON)", required=False, max_length=20000, widget=forms.Textarea)
    scanners = forms.CharField(label="Scanners (JSON)", required=False, max_length=20000, widget=forms.Textarea)
    toxicity_threshold = forms.FloatField(
        label="Toxicity threshold", min_value=MIN_THRESHOLD, max_value=MAX_THRESHOLD, initial=DEFAULT_THRESHOLD,
        required=False,
    )  # fmt: skip

    JSON_FIELDS = {"patterns": list, "scanners": list}

    def __init__(
        self,
        *args: Any,
        kept_input: dict[str, str] | None = None,
        kept_output: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.categories = guardrail_categories()
        self.kept_input = kept_input or {}
        self.kept_output = kept_output or {}
        for category, _ in self.categories:
            self.fields[f"input_{category}"] = forms.ChoiceField(
                choices=[(a, _ACTION_LABELS[a]) for a in INPUT_ACTIONS], initial=OFF, required=False
            )
            self.fields[f"output_{category}"] = forms.ChoiceField(
                choices=[(a, _ACTION_LABELS[a]) for a in OUTPUT_ACTIONS], initial=OFF, required=False
            )

    def category_rows(self) -> list[dict[str, Any]]:
        """One row per category for the template: its name, description and its two bound fields."""
        return [
            {
                "category": category,
                "label": _CATEGORY_LABELS.get(category) or category.replace("_", " ").capitalize(),
                "description": description,
                "input": self[f"input_{category}"],
                "output": self[f"output_{category}"],
            }
            for category, description in self.categories
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        json_fields_clean(self, cleaned, self.JSON_FIELDS)
        if cleaned.get("toxicity_threshold") is None:
            cleaned["toxicity_threshold"] = DEFAULT_THRESHOLD
        cleaned["blocklist"] = [line.strip() for line in (cleaned.get("blocklist") or "").splitlines() if line.strip()]
        known = {category for category, _ in self.categories}
        # A forged or stale field for a category nothing reports is refused, not silently dropped.
        for key in self.data:
            side, _, category = key.partition("_")
            if side in ("input", "output") and category and category not in known:
                self.add_error(None, f"Unknown guardrail category '{category}'.")
        for side, kept in (("input", self.kept_input), ("output", self.kept_output)):
            actions = dict(kept)
            for category in known:
                action = cleaned.get(f"{side}_{category}") or OFF
                if action != OFF:
                    actions[category] = action
            cleaned[f"{side}_actions"] = actions
        return cleaned

    def profile_fields(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in policy_services.PROFILE_FIELDS}

    @classmethod
    def initial_from(cls, config: dict[str, Any], *, name: str = "", description: str = "") -> dict[str, Any]:
        initial: dict[str, Any] = {
            "name": name,
            "description": description,
            "blocklist": "\n".join(config.get("blocklist") or []),
            "patterns": json.dumps(config.get("patterns") or [], indent=2),
            "scanners": json.dumps(config.get("scanners") or [], indent=2),
            "toxicity_threshold": config.get("toxicity_threshold", DEFAULT_THRESHOLD),
        }
        for side in ("input", "output"):
            for category, action in (config.get(side) or {}).items():
                initial[f"{side}_{category}"] = action
        return initial


def _kept(actions: dict[str, str]) -> dict[str, str]:
    """The actions of categories the form does not list (a custom pattern's), carried over on save."""
    listed = {category for category, _ in guardrail_categories()}
    return {category: action for category, action in actions.items() if category not in listed}


class TrialForm(forms.Form):
    """The "test this text" box: one text, at most `TRIAL_MAX_BYTES` of UTF-8."""

    text = forms.CharField(label="Text to test", strip=False, max_length=TRIAL_MAX_BYTES)

    def clean_text(self) -> str:
        text: str = self.cleaned_data["text"]
        if len(text.encode("utf-8", "surrogatepass")) > TRIAL_MAX_BYTES:
            raise forms.ValidationError(f"At most {TRIAL_MAX_BYTES // 1024} KiB of text.")
        return text


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
        "builtin": DEFAULT_PROFILE_CONFIG,
        "builtin_superseded_by": guardrail_profile_default(),
    }
    return render(request, "console/policies/profiles.html", context)


def _edit_context(request: HttpRequest, **values: Any) -> dict[str, Any]:
    return {
        "tabs": policy_tabs("console:policy-profiles"),
        "create_orgs": [],
        "trial_form": TrialForm(),
        "trial": None,
        "trial_max_kib": TRIAL_MAX_BYTES // 1024,
        "builtin": False,
        **values,
    }


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile_create_view(request: HttpRequest) -> HttpResponse:
    create_orgs = create_organizations(request, GuardrailProfile)
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
            form.add_error(None, error)
    else:
        if not create_orgs:
            return redirect("console:policy-profiles")
        form = ProfileForm(initial=ProfileForm.initial_from({}))
    context = _edit_context(request, form=form, create_orgs=create_orgs, profile=None, may_change=True)
    return render(request, "console/policies/profile_edit.html", context)


def _profile_for(request: HttpRequest, pk: int, action: str) -> tuple[GuardrailProfile, bool]:
    """The profile `pk` if the user may `action` it (404/403 otherwise), and whether they may change it."""
    profile = tenant_object(
        GuardrailProfile.objects.select_related("organization"), request=request, pk=pk, action=action
    )
    principal = page_principal(request)
    may_change = (profile.organization_id is not None or principal.is_superadmin) and (
        GuardrailProfile.objects.filter(pk=profile.pk).restrict(principal, "change").exists()
    )
    return profile, may_change


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def profile_edit_view(request: HttpRequest, pk: int) -> HttpResponse:
    profile, may_change = _profile_for(request, pk, "change" if request.method == "POST" else "view")
    kept = {"kept_input": _kept(profile.input_actions), "kept_output": _kept(profile.output_actions)}
    if request.method == "POST":
        form = ProfileForm(request.POST, **kept)
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
            form.add_error(None, error)
    else:
        initial = ProfileForm.initial_from(profile.config(), name=profile.name, description=profile.description)
        form = ProfileForm(initial=initial, **kept)
    context = _edit_context(request, form=form, profile=profile, may_change=may_change)
    return render(request, "console/policies/profile_edit.html", context)


@never_cache
@login_required
@require_GET
def profile_builtin_view(request: HttpRequest) -> HttpResponse:
    """The built-in profile, read-only: what applies where no policy names a profile and no default exists."""
    form = ProfileForm(initial=ProfileForm.initial_from(DEFAULT_PROFILE_CONFIG, name="Built-in"))
    context = _edit_context(
        request, form=form, profile=None, may_change=False, builtin=True, superseded_by=guardrail_profile_default()
    )
    return render(request, "console/policies/profile_edit.html", context)


def _trial_render(
    request: HttpRequest, *, config: dict[str, Any] | None, profile: GuardrailProfile | None, may_change: bool
) -> HttpResponse:
    """Run the posted text through `config` and show the profile page with the result (nothing is stored)."""
    trial_form = TrialForm(request.POST)
    trial: TrialResult | None = None
    if trial_form.is_valid():
        trial = guardrail_profile_trial(guardrail_profile_compile(config), trial_form.cleaned_data["text"])
    if profile is not None:
        initial = ProfileForm.initial_from(profile.config(), name=profile.name, description=profile.description)
        form = ProfileForm(initial=initial, kept_input=_kept(profile.input_actions))
    else:
        form = ProfileForm(initial=ProfileForm.initial_from(DEFAULT_PROFILE_CONFIG, name="Built-in"))
    context = _edit_context(
        request,
        form=form,
        profile=profile,
        may_change=may_change,
        builtin=profile is None,
        superseded_by=guardrail_profile_default() if profile is None else None,
        trial_form=trial_form,
        trial=trial,
    )
    return render(request, "console/policies/profile_edit.html", context, status=200 if trial is not None else 400)


@never_cache
@login_required
@require_POST
def profile_trial_view(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Test this text" on a saved profile: anyone who may see the profile may try it."""
    profile, may_change = _profile_for(request, pk, "view")
    return _trial_render(request, config=profile.config(), profile=profile, may_change=may_change)


@never_cache
@login_required
@require_POST
def profile_builtin_trial_view(request: HttpRequest) -> HttpResponse:
    """ "Test this text" on the built-in profile."""
    return _trial_render(request, config=None, profile=None, may_change=False)
