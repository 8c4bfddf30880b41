"""REST endpoints for roles (built-in ones read-only, custom ones composed by owners) and object grants."""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from apps.rbac import services as rbac_services
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantViewSet,
    service_call,
    service_schema,
)
from apps.rbac.models import Role
from apps.rbac.restrict import principal_can
from apps.rbac.serializers import GrantIn, RoleCreateIn, RoleOut, RoleUpdateIn


@service_schema(create_in=RoleCreateIn, update_in=RoleUpdateIn, detail_out=RoleOut)
class RoleViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Built-in roles and the custom roles of the caller's organisations."""

    model = Role
    serializer_class = RoleOut
    filterset_fields = ["organization", "slug", "is_builtin"]
    search_fields = ["name", "slug"]
    ordering_fields = ["slug", "name"]
    service_object = "role"
    update_in = RoleUpdateIn
    update_service = staticmethod(rbac_services.role_update)
    delete_service = staticmethod(rbac_services.role_delete)
    create_in = RoleCreateIn
    create_service = staticmethod(rbac_services.role_create)

    def base_queryset(self) -> Any:
        return Role.objects.prefetch_related("permissions__content_type")


class GrantActionsMixin:
    """`POST .../{id}/grant/` and `.../{id}/ungrant/` on delegable objects (deployments, keys, pools, providers).
    Granting needs the right to change the object."""

    @extend_schema(request=GrantIn, responses={204: None})
    @action(detail=True, methods=["post"])
    def grant(self, request: Request, pk: str) -> Response:
        return self._grant(request, rbac_services.object_grant)

    @extend_schema(request=GrantIn, responses={204: None})
    @action(detail=True, methods=["post"])
    def ungrant(self, request: Request, pk: str) -> Response:
        return self._grant(request, rbac_services.object_grant_revoke)

    def _grant(self, request: Request, service: Any) -> Response:
        view: Any = self
        obj: Model = view.get_object()
        data = GrantIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        for granted in data.validated_data["actions"]:
            # Nobody hands out more than they hold: a team trusted to change a deployment cannot grant deleting it.
            if not principal_can(principal=view.principal, action=granted, obj=obj):
                raise PermissionDenied(f"You may not grant {granted}: you do not hold it.")
        service_call(
            service,
            obj=obj,
            actions=data.validated_data["actions"],
            team=data.validated_data.get("team"),
            user=data.validated_data.get("user"),
            actor=view.actor,
            context=view.audit_context,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


GRANT_TENANT_ACTIONS = {"grant": "change", "ungrant": "change"}
