"""Django admin for policies and guardrail profiles. Saves go through the write services, so admin edits are
validated, audited and published to every gateway like any other change."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from apps.policies.models import GuardrailProfile, Policy
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


@admin.register(Policy)
class PolicyAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = (
        "__str__", "organization", "team", "api_key", "enabled", "requests_per_minute", "tokens_per_minute",
        "concurrent_requests", "budget_per_month_micros", "guardrail_profile",
    )  # fmt: skip
    list_filter = ("enabled", "organization", ("guardrail_profile", admin.RelatedOnlyFieldListFilter))
    search_fields = ("organization__name", "organization__slug", "team__name", "api_key__name", "api_key__prefix")
    list_select_related = ("organization", "team", "api_key", "guardrail_profile")
    autocomplete_fields = ("organization", "team", "api_key")
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: Any, obj: Policy, form: Any, change: bool) -> None:
        fields = {name: getattr(obj, name) for name in POLICY_FIELDS}
        if change:
            saved = policy_update(policy=obj, actor=request.user, changes=fields)
        else:
            saved = policy_create(
                actor=request.user, organization=obj.organization, team=obj.team, api_key=obj.api_key, **fields
            )
        obj.pk = saved.pk

    def delete_model(self, request: Any, obj: Policy) -> None:
        policy_delete(policy=obj, actor=request.user)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for policy in queryset:
            policy_delete(policy=policy, actor=request.user)


@admin.register(GuardrailProfile)
class GuardrailProfileAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ("name", "organization", "is_default", "updated_at")
    list_filter = ("is_default", "organization")
    search_fields = ("name", "organization__name", "organization__slug")
    list_select_related = ("organization",)
    readonly_fields = ("created_at", "updated_at")

    def save_model(self, request: Any, obj: GuardrailProfile, form: Any, change: bool) -> None:
        fields = {name: getattr(obj, name) for name in PROFILE_FIELDS_PLATFORM}
        if obj.organization_id is not None:
            fields.pop("is_default")
        if change:
            saved = guardrail_profile_update(profile=obj, actor=request.user, changes=fields)
        else:
            saved = guardrail_profile_create(actor=request.user, organization=obj.organization, **fields)
        obj.pk = saved.pk

    def delete_model(self, request: Any, obj: GuardrailProfile) -> None:
        guardrail_profile_delete(profile=obj, actor=request.user)

    def delete_queryset(self, request: Any, queryset: Any) -> None:
        for profile in queryset:
            guardrail_profile_delete(profile=profile, actor=request.user)
