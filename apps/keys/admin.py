"""API keys in Django admin: listed and searched, changed only through the keys' services.

A key's scopes, team and owner never change once it is handed out, and revocation must reach every gateway's
caches, so admin edits only what `api_key_update` allows (name, expiry, models) and revokes with an action that
calls `api_key_revoke`; both write their audit events. Keys are never deleted here: revoke them instead (their
usage records keep pointing at them).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone

from apps.keys.models import ApiKey
from apps.keys.services import KEY_EDITABLE_FIELDS, api_key_revoke, api_key_update
from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.admin_writes import ServiceAdminMixin


@admin.register(ApiKey)
class ApiKeyAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "prefix", "organization", "team", "owner", "created_at", "expires_at", "revoked_at"]
    list_filter = ["organization", ("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    list_select_related = ["organization", "team", "owner"]
    search_fields = ["name", "prefix", "organization__name", "owner__email"]
    # The hash never leaves the database; keys are created through the console, API or CLI (shown once there).
    exclude = ["secret_hash"]
    actions = ["revoke_selected"]

    service_object = "key"
    update_service = staticmethod(api_key_update)  # admin's change view runs in its transaction: the purge follows
    service_fields = KEY_EDITABLE_FIELDS

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return [
            field.name
            for field in ApiKey._meta.get_fields()
            if field.concrete and field.name not in (*KEY_EDITABLE_FIELDS, "secret_hash", "id")
        ]

    @admin.action(description="Revoke the selected keys (every gateway within a second)", permissions=["change"])
    def revoke_selected(self, request: HttpRequest, queryset: Any) -> None:
        revoked = 0
        now = timezone.now()
        # A key in a rotation's grace period (revoked_at ahead) is still usable: revoking ends it now.
        for key in queryset.filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=now)):
            api_key_revoke(key=key, actor=request.user, reason="revoked in admin", context=self.audit_context(request))
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
