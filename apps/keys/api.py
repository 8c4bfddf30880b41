"""REST endpoints for API keys: create (secret shown once), list with usage to date, edit, rotate, revoke."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from django.db.models import IntegerField, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.audit.services import AuditContext
from apps.keys import services as key_services
from apps.keys.models import ApiKey, Scope
from apps.keys.serializers import (
    ApiKeyCreateIn,
    ApiKeyIssuedOut,
    ApiKeyOut,
    ApiKeyRevokeIn,
    ApiKeyRotateIn,
    ApiKeyUpdateIn,
    SocketTokenIn,
    SocketTokenOut,
)
from apps.keys.socket_tokens import socket_token_mint
from apps.rbac.api import GRANT_TENANT_ACTIONS, GrantActionsMixin
from apps.rbac.authentication import ApiKeyAuthentication
from apps.rbac.drf import ServiceCreateMixin, TenantViewSet, request_principal, service_call, service_schema
from apps.rbac.restrict import organizations_allowing
from apps.usage.models import UsageRollup


def _usage(expression: Any) -> Coalesce:
    """A key's total from the hourly usage rollups (raw records are pruned after their retention)."""
    per_key = (
        UsageRollup.objects.filter(api_key_id=OuterRef("pk"))
        .order_by()
        .values("api_key_id")
        .annotate(total=expression)
        .values("total")
    )
    return Coalesce(Subquery(per_key, output_field=IntegerField()), Value(0))


@service_schema(detail_out=ApiKeyIssuedOut, create_in=ApiKeyCreateIn)
class ApiKeyViewSet(
    ServiceCreateMixin, GrantActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet
):
    """Keys of the caller's organisations: prefix, scopes, last use and usage to date; never the secret."""

    model = ApiKey
    serializer_class = ApiKeyOut
    filterset_fields = ["organization", "team", "owner"]
    search_fields = ["name", "prefix"]
    ordering_fields = ["created_at", "last_used_at", "name", "expires_at"]
    tenant_actions = {"rotate": "change", "revoke": "delete", **GRANT_TENANT_ACTIONS}
    create_in = ApiKeyCreateIn
    create_service = staticmethod(key_services.api_key_create)

    def base_queryset(self) -> Any:
        return ApiKey.objects.select_related("owner").annotate(
            requests_to_date=_usage(Sum("requests")),
            tokens_to_date=_usage(Sum("prompt_tokens") + Sum("completion_tokens")),
            cost_micros_to_date=_usage(Sum("cost_micros")),
        )

    def create_values(self, values: dict[str, Any]) -> dict[str, Any]:
        organization = values["organization"]
        self.check_may_add(organization)
        principal = self.principal
        service = values.pop("service") or principal.user is None
        values.pop("purpose")  # validated as `application`, the service's default
        if service and principal.user is not None:
            # Service keys outlive people: only who may change every key of the organisation issues one.
            may = organizations_allowing(principal=principal, action="change", model=ApiKey)
            if not may.filter(pk=organization.pk).exists():
                raise PermissionDenied("You may issue keys for yourself only.")
        return {**values, "owner": None if service else principal.user}

    def created_data(self, created: Any) -> Any:
        return self._issued(created)

    @extend_schema(request=ApiKeyUpdateIn, responses=ApiKeyOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        key = self.get_object()
        data = ApiKeyUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        service_call(
            key_services.api_key_update,
            key=key,
            changes=data.validated_data,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(ApiKeyOut(self.base_queryset().get(pk=key.pk)).data)

    @extend_schema(request=ApiKeyRotateIn, responses={201: ApiKeyIssuedOut})
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str) -> Response:
        """A new secret for the key; the old one keeps working for the grace period, then is revoked."""
        key = self.get_object()
        data = ApiKeyRotateIn(data=request.data)
        data.is_valid(raise_exception=True)
        issued = service_call(
            key_services.api_key_rotate,
            key=key,
            grace=timedelta(seconds=data.validated_data["grace_seconds"]),
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(self._issued(issued), status=status.HTTP_201_CREATED)

    @extend_schema(request=ApiKeyRevokeIn, responses=ApiKeyOut)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str) -> Response:
        """Revoke the key now, everywhere (the gateways' caches included)."""
        key = self.get_object()
        data = ApiKeyRevokeIn(data=request.data)
        data.is_valid(raise_exception=True)
        service_call(
            key_services.api_key_revoke,
            key=key,
            reason=data.validated_data["reason"],
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(ApiKeyOut(self.base_queryset().get(pk=key.pk)).data)

    def destroy(self, request: Request, pk: str) -> Response:
        """Keys are never deleted (history refers to them): DELETE revokes."""
        service_call(key_services.api_key_revoke, key=self.get_object(), actor=self.actor, context=self.audit_context)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _issued(self, issued: key_services.IssuedKey) -> dict[str, Any]:
        key = self.base_queryset().get(pk=issued.key.pk)
        key.secret = issued.secret
        return ApiKeyIssuedOut(key).data


class MintsSocketTokens(BasePermission):
    """A key with the `inference` scope (the token acts as it), or a signed-in user (who names a key)."""

    message = "This API key lacks the 'inference' scope, which a socket token acts with."

    def has_permission(self, request: Request, view: Any) -> bool:
        if isinstance(request.auth, ApiKey):
            return Scope.INFERENCE in request.auth.scopes
        return bool(request.user and request.user.is_authenticated)


class SocketTokenView(APIView):
    """`POST /api/socket-tokens/`: a short-lived, single-use token with which a browser opens `/v1/chat/socket`.

    An API key mints for itself; a signed-in user mints for a key they may change. The token is in the answer only.
    """

    authentication_classes: ClassVar[list[Any]] = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes: ClassVar[list[Any]] = [MintsSocketTokens]

    @extend_schema(request=SocketTokenIn, responses={201: SocketTokenOut})
    def post(self, request: Request) -> Response:
        data = SocketTokenIn(data=request.data)
        data.is_valid(raise_exception=True)
        named = data.validated_data.get("key")
        principal = request_principal(request)
        if isinstance(request.auth, ApiKey):
            if named is not None and named != request.auth.pk:
                raise PermissionDenied("An API key mints socket tokens for itself only.")
            key = request.auth
        else:
            if named is None:
                raise ValidationError({"key": ["This field is required when signed in."]})
            key = ApiKey.objects.restrict(principal, "change").filter(pk=named).first()
            if key is None:
                raise NotFound("No such key, or you may not change it.")
        minted = service_call(
            socket_token_mint,
            key=key,
            actor=principal.actor,
            ttl_seconds=data.validated_data.get("ttl_seconds"),
            context=AuditContext.from_request(request),
        )
        return Response(SocketTokenOut(minted).data, status=status.HTTP_201_CREATED)
