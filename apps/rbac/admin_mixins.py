"""The tenancy door for Django admin: changelists, object pages, relation pickers and list filters of tenant models
go through `.restrict()`, so even a staff user given global model permissions by mistake sees only their own
organisations. The platform superadmin sees everything, as everywhere."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import ForeignKey, Model, QuerySet
from django.http import HttpRequest

from apps.rbac.restrict import principal_can
from inferia_runtime.tenancy import tenant_path_of


class TenantAdminMixin:
    """Put first in a tenant model admin's bases."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return queryset.restrict(request.user)

    def _allowed(self, request: HttpRequest, action: str, obj: Model | None) -> bool:
        return obj is None or principal_can(principal=request.user, action=action, obj=obj)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_view_permission(request, obj) and self._allowed(request, "view", obj)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_change_permission(request, obj) and self._allowed(request, "change", obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_delete_permission(request, obj) and self._allowed(request, "delete", obj)  # type: ignore[misc]

    def formfield_for_foreignkey(self, db_field: ForeignKey, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if tenant_path_of(related) is not None and "queryset" not in kwargs:
            kwargs["queryset"] = related._default_manager.restrict(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        related = db_field.related_model
        if tenant_path_of(related) is not None and "queryset" not in kwargs:
            kwargs["queryset"] = related._default_manager.restrict(request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        # A plain related-field filter lists every row of the related model; only the related rows present in
        # the (restricted) changelist may be offered.
        filters = []
        for entry in super().get_list_filter(request):  # type: ignore[misc]
            if isinstance(entry, str):
                field = _field_at(self.model, entry)  # type: ignore[attr-defined]
                if field is not None and field.is_relation:
                    entry = (entry, admin.RelatedOnlyFieldListFilter)
            filters.append(entry)
        return filters


def _field_at(model: type[Model], path: str) -> Any:
    field = None
    for part in path.split("__"):
        try:
            field = model._meta.get_field(part)
        except Exception:
            return None
        if field.is_relation and field.related_model is not None:
            model = field.related_model
    return field
