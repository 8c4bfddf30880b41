"""The prompt templates pages: the list, the editor for a new template, a template's immutable version history with
the `/v1` request that uses it, adding a version (an edit is always a new version) in the same editor, its
description, a unified diff between two versions, and deleting a template. Writes go through
`apps.policies.prompts.services` (audited, published to every gateway)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.validators import RegexValidator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.console.pages.support import (
    create_organizations,
    keyset_page,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_audit_context,
    page_organizations_allowing,
    page_principal,
    query_without,
    require_may_add,
    service_announce,
    service_run,
    tenant_object,
)
from apps.console.pages.template_forms import TemplateEditor
from apps.policies.errors import TemplateNotFound
from apps.policies.models import PromptTemplate
from apps.policies.prompts import services as template_services
from apps.policies.prompts.rendering import (
    REQUEST_TEMPLATE_FIELD,
    REQUEST_VARIABLES_FIELD,
    TEMPLATE_NAME_RE,
    template_request_example,
)
from apps.policies.prompts.selectors import prompt_template_versions_diff

HISTORY_LIMIT = 100


class TemplateCreateForm(forms.Form):
    """What names a new template; its content comes from the editor."""

    name = forms.CharField(
        label="Name",
        max_length=100,
        validators=[
            RegexValidator(
                re.compile(rf"^{TEMPLATE_NAME_RE.pattern}\Z"),
                "Letters, digits, '_', '.' or '-', starting with a letter or a digit (no spaces).",
            )
        ],
    )
    description = forms.CharField(label="Description", required=False, max_length=2000, widget=forms.Textarea)


class TemplateDescribeForm(forms.Form):
    description = forms.CharField(label="Description", required=False, max_length=2000, widget=forms.Textarea)


@never_cache
@login_required
@require_GET
def templates_view(request: HttpRequest) -> HttpResponse:
    templates, _ = organization_filter(request, PromptTemplate.objects.restrict(page_principal(request)))
    query = request.GET.get("q", "").strip()
    if query:
        templates = templates.filter(Q(name__icontains=query) | Q(description__icontains=query))
    page = keyset_page(templates.select_related("organization", "created_by"), request=request)
    context = {
        "rows": page.rows,
        "page": page,
        "q": query,
        "query": query_without(request, "older", "newer"),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "may_create": page_organizations_allowing(request, "add", PromptTemplate).exists(),
    }
    return render(request, "console/templates/list.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def template_create_view(request: HttpRequest) -> HttpResponse:
    """The editor for a new template (GET), and creating it with its first version (POST)."""
    create_orgs = create_organizations(request, PromptTemplate)
    if request.method == "GET":
        if not create_orgs:
            raise PermissionDenied("You may not add a prompt template.")
        context = {"form": TemplateCreateForm(), "editor": TemplateEditor(), "create_orgs": create_orgs}
        return render(request, "console/templates/create.html", context)
    organization = require_may_add(request, PromptTemplate, request.POST.get("organization"))
    form, editor = TemplateCreateForm(request.POST), TemplateEditor(request.POST)
    problems: list[str] = []
    form_valid, editor_valid = form.is_valid(), editor.is_valid()  # both, so that every problem shows at once
    if form_valid and editor_valid:
        version, error = service_run(
            template_services.prompt_template_create,
            actor=request.user,
            organization=organization,
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
            context=page_audit_context(request),
            **editor.content(),
        )
        if not error:
            messages.success(request, f"Template {version.template.name} created at version 1.")
            return redirect("console:template-detail", pk=version.template_id)
        problems.append(error)
    problems += [f"{form.fields[k].label if k in form.fields else k}: {' '.join(v)}" for k, v in form.errors.items()]
    problems += editor.errors()
    context = {"form": form, "editor": editor, "create_orgs": create_orgs, "problems": problems}
    return render(request, "console/templates/create.html", context, status=400)


def _detail_context(request: HttpRequest, template: PromptTemplate) -> dict[str, Any]:
    versions = list(
        template.versions.select_related("created_by", "created_by_key").order_by("-version")[:HISTORY_LIMIT]
    )
    principal = page_principal(request)
    one = PromptTemplate.objects.filter(pk=template.pk)
    latest = versions[0] if versions else None
    example = (
        template_request_example(name=template.name, variables=latest.variables, model=latest.model)
        if latest is not None
        else None
    )
    return {
        "template": template,
        "versions": versions,
        "latest": latest,
        "latest_variables": latest.variables if latest is not None else [],
        "example": json.dumps(example, indent=2, ensure_ascii=False) if example is not None else "",
        "template_field": REQUEST_TEMPLATE_FIELD,
        "variables_field": REQUEST_VARIABLES_FIELD,
        "truncated": template.latest_version > len(versions),
        "may_change": one.restrict(principal, "change").exists(),
        "may_delete": one.restrict(principal, "delete").exists(),
        "playground_query": urlencode({"org": template.organization.slug, "template": template.name}),
    }


@never_cache
@login_required
@require_GET
def template_detail_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(PromptTemplate.objects.select_related("organization"), request=request, pk=pk)
    context = _detail_context(request, template)
    if context["may_change"]:
        context["editor"] = TemplateEditor(version=context["latest"])
        context["describe"] = TemplateDescribeForm(initial={"description": template.description})
    return render(request, "console/templates/detail.html", context)


@login_required
@require_POST
def template_version_create_view(request: HttpRequest, pk: int) -> HttpResponse:
    template = tenant_object(
        PromptTemplate.objects.select_related("organization"), request=request, pk=pk, action="change"
    )
    latest = template.versions.filter(version=template.latest_version).first()
    editor = TemplateEditor(request.POST, version=latest)
    problems: list[str] = []
    if editor.is_valid():
        version, error = service_run(
            template_services.prompt_template_version_create,
            template=template,
            actor=request.user,
            context=page_audit_context(request),
            **editor.content(),
        )
        if not error:
            messages.success(request, f"Version {version.version} saved; `{template.name}` now resolves to it.")
            return redirect("console:template-detail", pk=template.pk)
        problems.append(error)
    problems += editor.errors()
    context = _detail_context(request, template)
    context.update(
        editor=editor, problems=problems, describe=TemplateDescribeForm(initial={"description": template.description})
    )
    return render(request, "console/templates/detail.html", context, status=400)


@login_required
@require_POST
def template_describe_view(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a template's description (its name never changes: requests refer to it)."""
    template = tenant_object(PromptTemplate.objects.all(), request=request, pk=pk, action="change")
    form = TemplateDescribeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Description: " + " ".join(form.errors.get("description", [])))
        return redirect("console:template-detail", pk=template.pk)
    service_announce(
        request,
        template_services.prompt_template_update,
        template=template,
        actor=request.user,
        changes={"description": form.cleaned_data["description"]},
        context=page_audit_context(request),
        success="Description saved.",
    )
    return redirect("console:template-detail", pk=template.pk)


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
