"""The REST API's request edge: who is asking (the principal), where from (`AuditContext.from_request`), what they
may touch (every query through `.restrict()`), and how a write runs (`service_call`, and the create, update and
delete mixins built on it).

A request's principal is the API key when one was presented (`Authorization: Bearer sk-inf-...`), else the
session's user. Rows the principal may not see are 404; rows it may see but not change are 403. A service's
refusal (`DomainRefusal`, or a Django `ValidationError`) is a 400; any other exception is a bug and a 500.

An edge module, like every `api.py` built on it: it may import any app (keys' ApiKey, to tell a key from a person);
no domain module imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db import models as db_models
from django.db.models import Model, QuerySet
from django.http import Http404
from django_filters import rest_framework as django_filters
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, filters, serializers, status
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from apps.audit.actors import Actor
from apps.audit.services import AuditContext
from apps.keys.models import ApiKey, Scope
from apps.rbac.authentication import ApiKeyAuthentication
from apps.rbac.restrict import Principal, organizations_allowing, role_within_reach
from inferia_runtime.errors import DomainRefusal

MANAGEMENT_SCOPES = frozenset({Scope.READ, Scope.MANAGE})

# Which restrict() action each viewset action needs; custom actions declare theirs with `tenant_action`.
VIEWSET_ACTIONS = {
    "list": "view",
    "retrieve": "view",
    "create": "add",
    "update": "change",
    "partial_update": "change",
    "destroy": "delete",
}


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Tells drf-spectacular how API keys are presented."""

    target_class = "apps.rbac.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "sk-inf-..."}


def request_principal(request: Request) -> Principal:
    """The API key when the request presented one, else the signed-in user."""
    if isinstance(request.auth, ApiKey):
        return Principal.of(request.auth)
    return Principal.of(request.user)


class HasPrincipal(BasePermission):
    """Someone is asking: a signed-in user, or a key with a management scope. What they may touch is `.restrict()`'s
    business. An inference-only key is refused outright rather than shown empty lists, so a misconfigured script
    learns why at once."""

    message = "This API key has neither the `read` nor the `manage` scope: it may only call /v1."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiKey):
            return bool(MANAGEMENT_SCOPES.intersection(request.auth.scopes))
        return bool(request.user and request.user.is_authenticated)


class TenantFilterSet(django_filters.FilterSet):
    """Filters on references compare ids and never look the referenced row up: a foreign id filters to nothing,
    the same as an unknown one (a choice filter would answer "invalid choice" and so reveal which ids exist)."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        db_models.ForeignKey: {"filter_class": django_filters.NumberFilter},
        db_models.OneToOneField: {"filter_class": django_filters.NumberFilter},
        db_models.ManyToManyField: {"filter_class": django_filters.NumberFilter},
    }


class TenantFilterBackend(django_filters.DjangoFilterBackend):
    filterset_base = TenantFilterSet


class TenantRelatedField(serializers.PrimaryKeyRelatedField):
    """A reference by id to a tenant row, resolved through `.restrict(principal, "view")`: a foreign id reads as
    "does not exist", exactly like an id that never existed."""

    def __init__(self, model: type[Model], **kwargs: Any) -> None:
        self.tenant_model = model
        kwargs.setdefault("queryset", model._default_manager.none())
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet[Any]:
        request = self.context.get("request")
        if request is None:
            return self.tenant_model._default_manager.none()
        return self.tenant_model._default_manager.restrict(request_principal(request))


def service_call(function: Any, /, **kwargs: Any) -> Any:
    """Run a write service as the top-level transaction of a request; its refusals become 400s in DRF's shape."""
    try:
        with transaction.atomic(durable=True):
            return function(**kwargs)
    except (DomainRefusal, DjangoValidationError) as error:
        detail = getattr(error, "message_dict", None) or getattr(error, "messages", None) or str(error)
        raise exceptions.ValidationError(detail) from error
    except IntegrityError as error:
        raise exceptions.ValidationError(
            "This conflicts with an existing record (a name or slug already used?)."
        ) from error


class TenantViewSet(GenericViewSet):
    """Base of every management API viewset: querysets go through `.restrict(principal, action)`.

    Subclasses set `model` (and may override `base_queryset` for select_related/annotations). A row outside the
    principal's view is 404; a visible row the principal may not change is 403."""

    model: ClassVar[type[Model]]
    authentication_classes: ClassVar[list[type[BaseAuthentication]]] = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes: ClassVar[list[type[BasePermission]]] = [HasPrincipal]
    filter_backends: ClassVar[list[Any]] = [TenantFilterBackend, filters.SearchFilter, filters.OrderingFilter]
    tenant_actions: ClassVar[dict[str, str]] = {}
    lookup_value_regex = "[0-9]+"

    @property
    def principal(self) -> Principal:
        return request_principal(self.request)

    @property
    def audit_context(self) -> AuditContext:
        return AuditContext.from_request(self.request)

    @property
    def actor(self) -> Actor:
        return self.principal.actor

    def tenant_action(self) -> str:
        return self.tenant_actions.get(self.action) or VIEWSET_ACTIONS.get(self.action, "view")

    def base_queryset(self) -> QuerySet[Any]:
        return self.model._default_manager.all()

    def restricted(self, action: str) -> QuerySet[Any]:
        return self.base_queryset().restrict(self.principal, action)

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular building the schema
            return self.model._default_manager.none()
        return self.restricted("view")

    def get_object(self) -> Any:
        lookup = {self.lookup_field: self.kwargs[self.lookup_url_kwarg or self.lookup_field]}
        action = self.tenant_action()
        obj = self.restricted(action).filter(**lookup).first()
        if obj is None:
            if action != "view" and self.restricted("view").filter(**lookup).exists():
                raise exceptions.PermissionDenied(f"You may not {action} this {self.model._meta.verbose_name}.")
            raise Http404
        self.check_object_permissions(self.request, obj)
        return obj

    def check_role_within_reach(self, role: Any, organization: Any) -> None:
        """Refuse (403) handing out, or taking away, a role with permissions the principal does not hold."""
        if not role_within_reach(principal=self.principal, role=role, organization=organization):
            raise exceptions.PermissionDenied("You may not assign a role with more rights than your own.")

    def check_may_add(self, organization: Any, model: type[Model] | None = None) -> None:
        """Refuse (403) a create in `organization` unless the principal may add this model there."""
        allowed = organizations_allowing(principal=self.principal, action="add", model=model or self.model)
        if organization is None or not allowed.filter(pk=organization.pk).exists():
            raise exceptions.PermissionDenied(f"You may not add a {(model or self.model)._meta.verbose_name} here.")


class ServiceCreateMixin(TenantViewSet):
    """`POST` through the model's create service, which checks, saves and audits the new object.

    The viewset names `create_in` (the body's serializer), `create_service` (a staticmethod taking the body's
    values, `actor` and `context`) and optionally `create_out` (what the answer is shaped by; `serializer_class`
    otherwise). `create_values` checks the values (by default: the principal may add this model in the body's
    organisation) and may reshape them; `created_data` shapes the answer. Its schema comes from `service_schema`."""

    create_service: ClassVar[Callable[..., Any]]
    create_in: ClassVar[type[serializers.Serializer]]
    create_out: ClassVar[type[serializers.Serializer] | None] = None

    def create(self, request: Request) -> Response:
        data = self.create_in(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = self.create_values(dict(data.validated_data))
        created = service_call(self.create_service, **values, actor=self.actor, context=self.audit_context)
        return Response(self.created_data(created), status=status.HTTP_201_CREATED)

    def create_values(self, values: dict[str, Any]) -> dict[str, Any]:
        self.check_may_add(values["organization"])
        return values

    def created_data(self, created: Any) -> Any:
        return (self.create_out or self.serializer_class)(created).data


class ServiceUpdateMixin(TenantViewSet):
    """`PATCH` through the object's update service, which checks, saves, audits and publishes the change.

    The viewset names `update_in` (the partial body's serializer), `update_service` (a staticmethod taking the
    object by the keyword `service_object`, with `changes`, `actor` and `context`) and optionally `detail_out`
    (what the answer is shaped by; `serializer_class` otherwise). Its schema comes from `service_schema`."""

    service_object: ClassVar[str]
    update_service: ClassVar[Callable[..., Any]]
    update_in: ClassVar[type[serializers.Serializer]]
    detail_out: ClassVar[type[serializers.Serializer] | None] = None

    def partial_update(self, request: Request, pk: str) -> Response:
        target = self.get_object()  # 404/403 before any 400
        data = self.update_in(data=request.data, partial=True, context={"request": request})
        data.is_valid(raise_exception=True)
        target = service_call(
            self.update_service,
            **{self.service_object: target},
            changes=dict(data.validated_data),
            actor=self.actor,
            context=self.audit_context,
        )
        return Response((self.detail_out or self.serializer_class)(target).data)


class ServiceDestroyMixin(TenantViewSet):
    """`DELETE` through the object's delete service (a staticmethod `delete_service` taking the object by the
    keyword `service_object`, with `actor` and `context`)."""

    service_object: ClassVar[str]
    delete_service: ClassVar[Callable[..., Any]]

    # A delete service refuses to delete what is still in use (a provider's pools, a running deployment): a 400.
    @extend_schema(responses={204: None, 400: OpenApiResponse(description="Refused: the object is still in use.")})
    def destroy(self, request: Request, pk: str) -> Response:
        service_call(
            self.delete_service,
            **{self.service_object: self.get_object()},
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


def service_schema(
    *,
    detail_out: type[serializers.Serializer],
    update_in: type[serializers.Serializer] | None = None,
    create_in: type[serializers.Serializer] | None = None,
    create_responses: dict[int, Any] | None = None,
) -> Any:
    """The OpenAPI description of a `ServiceCreateMixin` viewset's `POST` (answered 201 with `detail_out` unless
    `create_responses` says otherwise) and a `ServiceUpdateMixin` viewset's `PATCH`, as a class decorator."""
    operations = {}
    if update_in is not None:
        operations["partial_update"] = extend_schema(request=update_in, responses=detail_out)
    if create_in is not None:
        operations["create"] = extend_schema(request=create_in, responses=create_responses or {201: detail_out})
    return extend_schema_view(**operations)
