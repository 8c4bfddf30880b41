"""The prompt templates pages: the list, a template's immutable version history, adding a version (an edit is
always a new version), a unified diff between two versions, and deleting a template. Writes go through
`apps.policies.prompts.services` (audited, published to every gateway)."""

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
from django.views.decorators.http import require_GET, require_POST

from apps.console.pages.support import (
    json_fields_clean,
    keyset_page,
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
from apps.policies.errors import TemplateNotFound
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts import services as template_services
from apps.policies.prompts.selectors import prompt_template_versions_diff

HISTORY_LIMIT = 100
DEFAULT_MESSAGES = [{"role": "system", "content": "You are a helpful assistant for {{product}}."}]


class VersionForm(forms.Form):
    """A version's content: messages, variables and params as JSON, the default model and a note."""

    messages = forms.CharField(label="Messages (JSON)", widget=forms.Textarea)
    variables = forms.CharField(label="Variables (JSON)", required=False, widget=forms.Textarea)
    model = forms.CharField(label="Default model", required=False, max_length=200)
    params = forms.CharField(label="Default parameters (JSON)", required=False, widget=forms.Textarea)
    note = forms.CharField(label="What changed", required=False, max_length=500)

    JSON_FIELDS = {"messages": list, "variables": list, "params": dict}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        json_fields_clean(self, cleaned, self.JSON_FIELDS)
        return cleaned

    def content(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in template_services.VERSION_FIELDS}

    @classmethod
    def initial_from(cls, version: PromptTemplateVersion | None) -> dict[str, Any]:
        if version is None:
            return {
                "messages": json.dumps(DEFAULT_MESSAGES, indent=2),
                "variables": json.dumps([{"name": "product", "default": "Inferia"}], indent=2),
                "params": "{}",
            }
        return {
            "messages": json.dumps(version.messages, indent=2, ensure_ascii=False),
            "variables": json.dumps(version.variables, indent=2, ensure_ascii=False),
            "model": version.model,
            "params": json.dumps(version.params, indent=2, ensure_ascii=False),
        }


class TemplateCreateForm(VersionForm):
    organization = forms.IntegerField()
    name = forms.CharField(label="Name", max_length=100)
    description = forms.CharField(label="Description", required=False, max_length=2000)


def _form_errors(form: forms.Form) -> str:
    return "; ".join(f"{'' if k == '__all__' else k + ': '}{' '.join(v)}" for k, v in form.errors.items())


@never_cache
@login_required
@require_GET
def templates_view(request: HttpRequest) -> HttpResponse:
    templates, _ = organization_filter(request, PromptTemplate.objects.restrict(page_principal(request)))
    query = request.GET.get("q", "").strip()
    if query:
        templates = templates.filter(Q(name__icontains=query) | Q(description__icontains=query))
    page = keyset_page(templates.select_related("organization", "created_by"), request=request)
    create_orgs = list(page_organizations_allowing(request, "add", PromptTemplate).order_by("name"))
    context = {
        "rows": page.rows,
        "page": page,
        "q": query,
        "query": query_without(request, "older", "newer"),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "create_orgs": create_orgs,
        "form": TemplateCreateForm(initial=VersionForm.initial_from(None)) if create_orgs else None,
    }
    return render(request, "console/templates/list.html", context)


@login_required
@require_POST
def template_create_view(request: HttpRequest) -> HttpResponse:
    organization = require_may_add(request, PromptTemplate, request.POST.get("organization"))
    form = TemplateCreateForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Check the template: " + _form_errors(form))
        return redirect("console:templates")
    version, error = service_run(
        template_services.prompt_template_create,
        actor=request.user,
        organization=organization,
        name=form.cleaned_data["name"],
        description=form.cleaned_data["description"],
        context=page_audit_context(request),
        **form.content(),
    )
    if error:
        messages.error(request, error)
        return redirect("console:templates")
    messages.success(request, f"Template {version.template.name} created at version 1.")
    return redirect("console:template-detail", pk=version.template_id)


def _detail_context(request: HttpRequest, template: PromptTemplate) -> dict[str, Any]:
    versions = list(
        template.versions.select_related("created_by", "created_by_key").order_by("-version")[:HISTORY_LIMIT]
    )
    principal = page_principal(request)
    one = PromptTemplate.objects.filter(pk=template.pk)
    return {
        "template": template,
        "versions": versions,
        "latest": versions[0] if versions else None,
        "latest_messages": json.dumps(versions[0].messages, indent=2, ensure_ascii=False) if versions else "",
        "truncated": template.latest_version > len(versions),
        "may_change": one.restrict(principal, "change").exists(),
        "may_delete": one.restrict(principal, "delete").exists(),
    }


@never_cache
@login_required
@require_GET
def template_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(PromptTemplate.objects.select_related("organization"), request=request, pk=pk)
    context = _detail_context(request, template)
    context["form"] = VersionForm(initial=VersionForm.initial_from(context["latest"]))
    return render(request, "console/templates/detail.html", context)


@login_required
@require_POST
def template_version_create_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(
        PromptTemplate.objects.select_related("organization"), request=request, pk=pk, action="change"
    )
    form = VersionForm(request.POST)
    error = ""
    if form.is_valid():
        version, error = service_run(
            template_services.prompt_template_version_create,
            template=template,
            actor=request.user,
            context=page_audit_context(request),
            **form.content(),
        )
        if not error:
            messages.success(request, f"Version {version.version} saved; `{template.name}` now resolves to it.")
            return redirect("console:template-detail", pk=template.pk)
    messages.error(request, error or "Check the version: " + _form_errors(form))
    context = _detail_context(request, template)
    context["form"] = form
    return render(request, "console/templates/detail.html", context, status=400)


@never_cache
@login_required
@require_GET
def template_diff_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(PromptTemplate.objects.select_related("organization"), request=request, pk=pk)
    try:
        to_version = int(request.GET.get("to") or template.latest_version)
        from_version = int(request.GET.get("from") or max(to_version - 1, 1))
    except ValueError:
        from_version, to_version = max(template.latest_version - 1, 1), template.latest_version
    try:
        diff = prompt_template_versions_diff(template=template, from_version=from_version, to_version=to_version)
        missing = ""
    except TemplateNotFound:
        diff, missing = "", "One of those versions does not exist."
    numbers = list(template.versions.order_by("-version").values_list("version", flat=True)[:HISTORY_LIMIT])
    context = {
        "template": template,
        "diff": diff,
        "missing": missing,
        "from_version": from_version,
        "to_version": to_version,
        "numbers": numbers,
    }
    return render(request, "console/templates/diff.html", context)


@login_required
@require_POST
def template_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(PromptTemplate.objects.all(), request=request, pk=pk, action="delete")
    _, error = service_run(
        template_services.prompt_template_delete,
        template=template,
        actor=request.user,
        context=page_audit_context(request),
    )
    if error:
        messages.error(request, error)
        return redirect("console:template-detail", pk=template.pk)
    messages.success(request, f"Template {template.name} deleted.")
    return redirect("console:templates")
