from __future__ import annotations

from django.contrib import admin

from apps.audit.models import AuditEvent
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
