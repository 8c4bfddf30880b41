"""Django admin for policies, guardrail profiles and prompt templates (with their version history). Saves go
through the write services, so admin edits are validated, audited and published to every gateway like any other
change."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Model

from apps.policies.models import GuardrailProfile, Policy, PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.rendering import template_content_validate
from apps.policies.prompts.services import (
    prompt_template_create,
    prompt_template_delete,
    prompt_template_update,
    prompt_template_version_create,
)
from apps.policies.services import (
    POLICY_FIELDS,
    PROFILE_FIELDS_PLATFORM,
    guardrail_profile_create,
    guardrail_profile_delete,
    guardrail_profile_update,
    policy_create,
    policy_delete,
    policy_update,
)
from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.admin_writes import ServiceAdminMixin


@admin.register(Policy)
class PolicyAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin[Policy]):
    list_display = (
        "__str__", "organization", "team", "api_key", "enabled", "requests_per_minute", "tokens_per_minute",
        "concurrent_requests", "budget_per_month_micros", "guardrail_profile",
    )  # fmt: skip
    list_filter = ("enabled", "organization", ("guardrail_profile", admin.RelatedOnlyFieldListFilter))
    search_fields = ("organization__name", "organization__slug", "team__name", "api_key__name", "api_key__prefix")
    list_select_related = ("organization", "team", "api_key", "guardrail_profile")
    autocomplete_fields = ("organization", "team", "api_key")
    readonly_fields = ("created_at", "updated_at")
    service_object = "policy"
    create_service = staticmethod(policy_create)
    update_service = staticmethod(policy_update)
    delete_service = staticmethod(policy_delete)
    service_fields = POLICY_FIELDS
    creation_fields = ("organization", "team", "api_key")


@admin.register(GuardrailProfile)
class GuardrailProfileAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin[GuardrailProfile]):
    list_display = ("name", "organization", "is_default", "updated_at")
    list_filter = ("is_default", "organization")
    search_fields = ("name", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("created_at", "updated_at")
    service_object = "profile"
    create_service = staticmethod(guardrail_profile_create)
    update_service = staticmethod(guardrail_profile_update)
    delete_service = staticmethod(guardrail_profile_delete)
    service_fields = PROFILE_FIELDS_PLATFORM
    creation_fields = ("organization",)

    def service_create(self, request: Any, values: dict[str, Any]) -> Any:
        if values["organization"] is not None:  # only the platform's profile may be everyone's default
            values.pop("is_default")
        return super().service_create(request, values)


class PromptTemplateForm(forms.ModelForm[PromptTemplate]):
    """A template's description plus the content of its next version: saving with changed content adds a version
    (versions are never edited); the form starts from the latest version's content."""

    messages = forms.JSONField(help_text='[{"role": "system", "content": "You answer questions about {{product}}."}]')
    variables = forms.JSONField(required=False, initial=list, help_text='[{"name": "product", "default": "Inferia"}]')
    model = forms.CharField(required=False, max_length=200, help_text="Default model (optional).")
    params = forms.JSONField(required=False, initial=dict, help_text='Default parameters, e.g. {"temperature": 0.2}.')
    note = forms.CharField(required=False, max_length=500, help_text="What changed in this version.")

    class Meta:
        model = PromptTemplate
        fields = ("organization", "name", "description")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        latest = self.instance.versions.order_by("-version").first() if self.instance.pk else None
        if latest is not None:
            for name in ("messages", "variables", "model", "params"):
                self.fields[name].initial = getattr(latest, name)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if "messages" in cleaned:
            # The services validate again; here the errors land on the form instead of a 500.
            template_content_validate(**{k: v for k, v in self.content().items() if k != "note"})
        return cleaned

    def content(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "messages": data["messages"],
            "variables": data.get("variables") or [],
            "model": data.get("model") or "",
            "params": data.get("params") or {},
            "note": data.get("note") or "",
        }


class PromptTemplateVersionInline(admin.TabularInline[PromptTemplateVersion, PromptTemplate]):
    """The version history, read-only: versions are immutable."""

    model = PromptTemplateVersion
    fields = (
        "version",
        "messages",
        "variables",
        "model",
        "params",
        "note",
        "created_by",
        "created_by_key",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-version",)

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


@admin.register(PromptTemplate)
class PromptTemplateAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin[PromptTemplate]):
    form = PromptTemplateForm
    list_display = ("name", "organization", "latest_version", "updated_at")
    list_filter = ("organization",)
    search_fields = ("name", "description", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("latest_version", "created_by", "created_at", "updated_at")
    inlines = (PromptTemplateVersionInline,)
    service_object = "template"
    create_service = staticmethod(prompt_template_create)
    update_service = staticmethod(prompt_template_update)
    delete_service = staticmethod(prompt_template_delete)
    service_fields = ("description",)
    creation_fields = ("organization", "name")

    def save_model(self, request: Any, obj: Model, form: Any, change: bool) -> None:
        if not isinstance(obj, PromptTemplate):  # the mixin's signature covers every model; this admin's is templates
            raise TypeError(f"{type(self).__name__} saves prompt templates, not {type(obj).__name__}")
        # Content lives in versions: a new template gets its first, changed content on a saved one adds the next.
        content, context = form.content(), self.audit_context(request)
        if not change:
            saved = prompt_template_create(
                actor=request.user,
                organization=obj.organization,
                name=obj.name,
                description=obj.description,
                **content,
                context=context,
            )
            obj.pk = saved.template_id
            return
        if "description" in form.changed_data:
            prompt_template_update(
                template=obj, actor=request.user, changes={"description": obj.description}, context=context
            )
        if any(name in form.changed_data for name in ("messages", "variables", "model", "params")):
            prompt_template_version_create(template=obj, actor=request.user, **content, context=context)
