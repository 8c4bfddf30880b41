"""Django admin's one write path: a model admin saves and deletes through the app's services (which check, audit
and purge caches) or not at all.

An admin names its services (`create_service`, `update_service`, `delete_service`, each taking the object by the
keyword `service_object`, plus `actor` and `context`) and the fields they accept; every other form field is shown
read-only, and without a service the matching permission is simply refused. Many-to-many fields are the services'
business too, so the form never writes them itself, and bulk "delete selected" deletes one object at a time through
`delete_service`. A service's refusal comes back to the page as an error message, its transaction rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.contrib import messages
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from apps.audit.services import AuditContext
from inferia_runtime.errors import DomainRefusal


def refusal_text(refusal: DomainRefusal | DjangoValidationError) -> str:
    """One line saying why a service refused."""
    if isinstance(refusal, DjangoValidationError):
        return " ".join(refusal.messages)
    return str(refusal)


class ServiceAdminMixin:
    """Put first in a model admin's bases (before `TenantAdminMixin`); see the module docstring."""

    service_object: ClassVar[str]
    create_service: ClassVar[Callable[..., Any] | None] = None
    update_service: ClassVar[Callable[..., Any] | None] = None
    delete_service: ClassVar[Callable[..., Any] | None] = None
    # What `update_service` accepts in `changes`; `creation_fields` are also set, once, by `create_service`.
    service_fields: ClassVar[tuple[str, ...]] = ()
    creation_fields: ClassVar[tuple[str, ...]] = ()

    # Permissions: without a service there is nothing to do it with.

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return self.create_service is not None and super().has_add_permission(request, *args)  # type: ignore[misc]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.update_service is not None and super().has_change_permission(request, obj)  # type: ignore[misc]

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self.delete_service is not None and super().has_delete_permission(request, obj)  # type: ignore[misc]

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> list[str]:
        writable = set(self.service_fields) | (set(self.creation_fields) if obj is None else set())
        excluded = set(self.get_exclude(request, obj) or ())  # type: ignore[attr-defined]
        model = self.model  # type: ignore[attr-defined]
        declared = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return declared + [
            field.name
            for field in (*model._meta.fields, *model._meta.many_to_many)
            if field.editable and field.name not in writable | excluded | set(declared)
        ]

    # The services' calls.

    def audit_context(self, request: HttpRequest) -> AuditContext:
        return AuditContext.from_request(request)

    def service_create(self, request: HttpRequest, values: dict[str, Any]) -> Model:
        assert self.create_service is not None
        return self.create_service(**values, actor=request.user, context=self.audit_context(request))

    def service_update(self, request: HttpRequest, obj: Model, changes: dict[str, Any]) -> Model:
        assert self.update_service is not None
        return self.update_service(
            **{self.service_object: obj}, changes=changes, actor=request.user, context=self.audit_context(request)
        )

    def service_delete(self, request: HttpRequest, obj: Model) -> None:
        assert self.delete_service is not None
        self.delete_service(**{self.service_object: obj}, actor=request.user, context=self.audit_context(request))

    # Django admin's hooks, routed to them.

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        if not change:
            names = (*self.creation_fields, *self.service_fields)
            saved = self.service_create(request, {name: _value(form.cleaned_data[name]) for name in names})
            obj.pk = saved.pk
            return
        changes = {name: _value(form.cleaned_data[name]) for name in form.changed_data if name in self.service_fields}
        if changes:
            # The form has already written its values onto `obj`: the service diffs against the stored row.
            self.service_update(request, type(obj)._default_manager.get(pk=obj.pk), changes)

    def save_related(self, request: HttpRequest, form: Any, formsets: list[Any], change: bool) -> None:
        # No `form.save_m2m()`: the many-to-many fields went to the service with the others.
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)  # type: ignore[attr-defined]

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        self.service_delete(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            self.service_delete(request, obj)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._refusals_shown(request, super().changeform_view, request, *args, **kwargs)  # type: ignore[misc]

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._refusals_shown(request, super().delete_view, request, *args, **kwargs)  # type: ignore[misc]

    def changelist_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._refusals_shown(request, super().changelist_view, request, *args, **kwargs)  # type: ignore[misc]

    def _refusals_shown(
        self, request: HttpRequest, view: Callable[..., HttpResponse], *args: Any, **kwargs: Any
    ) -> Any:
        # The admin's view runs in a transaction that the refusal has rolled back by the time it arrives here.
        try:
            return view(*args, **kwargs)
        except (DomainRefusal, DjangoValidationError) as refusal:
            messages.error(request, f"Not saved: {refusal_text(refusal)}")
            return HttpResponseRedirect(request.get_full_path())


def _value(value: Any) -> Any:
    """A form's value as the services take it: a many-to-many selection as a list."""
    return list(value) if isinstance(value, QuerySet) else value
