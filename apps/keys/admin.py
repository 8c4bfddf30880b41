from __future__ import annotations

from django.contrib import admin
from guardian.admin import GuardedModelAdmin

from apps.keys.models import ApiKey
from apps.rbac.admin_mixins import TenantAdminMixin


@admin.register(ApiKey)
class ApiKeyAdmin(TenantAdminMixin, GuardedModelAdmin):
    list_display = ["name", "prefix", "organization", "team", "owner", "created_at", "expires_at", "revoked_at"]
    list_filter = ["organization", ("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["organization", "team", "owner"]
    search_fields = ["name", "prefix", "organization__name", "owner__email"]
    # The hash never leaves the database; keys are created through the console, API or CLI (shown once there).
    exclude = ["secret_hash"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "rotated_from"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
