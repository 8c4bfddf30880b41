"""Roles in Django admin, created, edited and deleted through the role services (audited). Built-in roles are
shown, never changed, and a custom role is made only of tenant permissions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db.models import Model
from django.http import HttpRequest

from apps.rbac import services as rbac_services
from apps.rbac.admin_mixins import TenantAdminMixin
from apps.rbac.admin_writes import ServiceAdminMixin
from apps.rbac.models import Role


def _permission_names(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with its permissions as the services name them (`app_label.codename`)."""
    if "permissions" not in values:
        return values
    names = [f"{perm.content_type.app_label}.{perm.codename}" for perm in values["permissions"]]
    return {**values, "permissions": names}


@admin.register(Role)
class RoleAdmin(ServiceAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "organization", "is_builtin"]
    list_filter = ["is_builtin", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "slug", "organization__name"]
    filter_horizontal = ["permissions"]
    service_object = "role"
    create_service = staticmethod(rbac_services.role_create)
    update_service = staticmethod(rbac_services.role_update)
    delete_service = staticmethod(rbac_services.role_delete)
    service_fields = ("name", "description", "permissions")
    creation_fields = ("organization", "slug")

    def _custom(self, obj: Model | None) -> bool:
        return obj is None or (isinstance(obj, Role) and not obj.is_builtin and obj.organization_id is not None)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._custom(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._custom(obj) and super().has_delete_permission(request, obj)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "permissions":
            kwargs["queryset"] = Permission.objects.filter(
                content_type__app_label__in=rbac_services.TENANT_APPS
            ).select_related("content_type")
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> Model:
        return super().service_create(request, _permission_names(values))

    def service_update(self, request: HttpRequest, obj: Model, changes: dict[str, Any]) -> Model:
        return super().service_update(request, obj, _permission_names(changes))
