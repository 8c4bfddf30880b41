"""The organisation tab: the current organisation's own settings (its name, two-factor sign-in for its owners and
admins, keeping requests' prompts and answers and for how long), changed through the audited organisation service."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from apps.console.pages.people.tabs import people_page_context
from apps.console.pages.support import page_audit_context, page_principal, service_run
from apps.console.scope import organization_current
from apps.orgs import services as org_services
from apps.orgs.models import CAPTURE_RETENTION_DAYS_MAX, CAPTURE_RETENTION_DAYS_MIN, Organization


class OrganizationSettingsForm(forms.Form):
    name = forms.CharField(label="Name", max_length=200)
    require_2fa = forms.BooleanField(label="Owners and admins must sign in with a second factor", required=False)
    capture_prompts = forms.BooleanField(
        label="Keep each request's prompt and answer (masked by the guardrails' redactions)", required=False
    )
    capture_retention_days = forms.IntegerField(
        label="Keep them for (days)", min_value=CAPTURE_RETENTION_DAYS_MIN, max_value=CAPTURE_RETENTION_DAYS_MAX
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name or "\x00" in name:
            raise forms.ValidationError("Give the organisation a name (no control characters).")
        return name


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def organization_settings_view(request: HttpRequest) -> HttpResponse:
    current = organization_current(request)
    if current is None:
        raise Http404
    principal = page_principal(request)
    may_change = Organization.objects.filter(pk=current.pk).restrict(principal, "change").exists()
    fields = ("name", "require_2fa", "capture_prompts", "capture_retention_days")
    form = OrganizationSettingsForm(
        request.POST if request.method == "POST" else None, initial={f: getattr(current, f) for f in fields}
    )
    if request.method == "POST":
        if not may_change:
            raise PermissionDenied("Your role may not change this organisation's settings.")
        if form.is_valid():
            changes = {f: form.cleaned_data[f] for f in fields if form.cleaned_data[f] != getattr(current, f)}
            _, error = service_run(
                org_services.organization_update,
                organization=current,
                changes=changes,
                actor=request.user,
                context=page_audit_context(request),
            )
            if not error:
                messages.success(request, f"Settings of {form.cleaned_data['name']} saved.")
                return redirect("console:member-settings")
            messages.error(request, error)
    context = {
        **people_page_context(request, "console:member-settings"),
        "organization": current,
        "form": form,
        "may_change": may_change,
    }
    return render(request, "console/members/settings.html", context)
