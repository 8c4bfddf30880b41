from __future__ import annotations

from django.contrib import admin

from apps.audit.models import AuditEvent, UsageRecord, UsageRollup
from apps.rbac.admin_mixins import TenantAdminMixin


class ReadOnlyAdmin(TenantAdminMixin, admin.ModelAdmin):
    """History is written by services only; the admin may look, never touch."""

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["seq", "occurred_at", "actor_label", "action", "target_type", "target_repr", "outcome"]
    list_filter = ["outcome", "action", "occurred_at"]
    search_fields = ["actor_label", "action", "target_repr", "target_id", "request_id"]
    date_hierarchy = "occurred_at"
    show_full_result_count = False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "request_id",
        "started_at",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost_micros",
        "status_code",
        "outcome",
    ]
    list_filter = ["outcome", "streamed", "estimated", "started_at"]
    search_fields = ["request_id", "model"]
    date_hierarchy = "started_at"
    show_full_result_count = False


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = ["hour", "organization_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens"]
    list_filter = ["hour"]
    search_fields = ["model"]
    date_hierarchy = "hour"
    show_full_result_count = False
