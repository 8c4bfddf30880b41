from __future__ import annotations

from django.contrib import admin

from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.models import Role


@admin.register(Role)
class RoleAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "organization", "is_builtin"]
    list_filter = ["is_builtin", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "slug", "organization__name"]
    filter_horizontal = ["permissions"]
