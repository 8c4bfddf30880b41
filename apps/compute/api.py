"""REST endpoints for the compute inventory: providers, pools, deployments (with sharing and team grants) and
replicas (read-only: the worker manages them)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from apps.compute import api_services
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.compute.serializers import (
    DeploymentCreateIn,
    DeploymentOut,
    DeploymentShareIn,
    DeploymentUpdateIn,
    PoolCreateIn,
    PoolOut,
    PoolUpdateIn,
    ProviderCreateIn,
    ProviderOut,
    ProviderUpdateIn,
    ReplicaOut,
)
from apps.rbac.api import GRANT_TENANT_ACTIONS, GrantActionsMixin
from apps.rbac.drf import TenantViewSet, service_call


class ProviderViewSet(GrantActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Where GPU nodes come from. Credentials go in, never come out."""

    model = Provider
    serializer_class = ProviderOut
    filterset_fields = ["organization", "kind"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]
    tenant_actions = GRANT_TENANT_ACTIONS

    @extend_schema(request=ProviderCreateIn, responses={201: ProviderOut})
    def create(self, request: Request) -> Response:
        data = ProviderCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        self.check_may_add(data.validated_data["organization"])
        provider = service_call(
            api_services.provider_create, **data.validated_data, actor=self.actor, context=self.audit_context
        )
        return Response(ProviderOut(provider).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ProviderUpdateIn, responses=ProviderOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        provider = self.get_object()
        data = ProviderUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        credentials = changes.pop("credentials", None)
        provider = service_call(
            api_services.provider_update,
            provider=provider,
            changes=changes,
            credentials=credentials,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(ProviderOut(provider).data)

    def destroy(self, request: Request, pk: str) -> Response:
        service_call(
            api_services.provider_delete, provider=self.get_object(), actor=self.actor, context=self.audit_context
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class PoolViewSet(GrantActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Kinds of node a provider can give."""

    model = ComputePool
    serializer_class = PoolOut
    filterset_fields = ["organization", "provider", "gpu_type", "region"]
    search_fields = ["name", "region", "gpu_type"]
    ordering_fields = ["name", "created_at", "cost_per_gpu_hour_micros"]
    tenant_actions = GRANT_TENANT_ACTIONS

    @extend_schema(request=PoolCreateIn, responses={201: PoolOut})
    def create(self, request: Request) -> Response:
        data = PoolCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        self.check_may_add(data.validated_data["organization"])
        pool = service_call(
            api_services.pool_create, **data.validated_data, actor=self.actor, context=self.audit_context
        )
        return Response(PoolOut(pool).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PoolUpdateIn, responses=PoolOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        pool = self.get_object()
        data = PoolUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        pool = service_call(
            api_services.pool_update,
            pool=pool,
            changes=data.validated_data,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(PoolOut(pool).data)

    def destroy(self, request: Request, pk: str) -> Response:
        service_call(api_services.pool_delete, pool=self.get_object(), actor=self.actor, context=self.audit_context)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeploymentViewSet(GrantActionsMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Models served on pools: the organisation's own, and platform deployments shared with it (read-only)."""

    model = ModelDeployment
    serializer_class = DeploymentOut
    filterset_fields = ["organization", "pool", "state", "served_model_name"]
    search_fields = ["name", "served_model_name", "model_id"]
    ordering_fields = ["served_model_name", "created_at", "state"]
    tenant_actions = {"share": "change", **GRANT_TENANT_ACTIONS}

    @extend_schema(request=DeploymentCreateIn, responses={201: DeploymentOut})
    def create(self, request: Request) -> Response:
        data = DeploymentCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        self.check_may_add(data.validated_data["organization"])
        deployment = service_call(
            api_services.deployment_create, **data.validated_data, actor=self.actor, context=self.audit_context
        )
        return Response(DeploymentOut(deployment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DeploymentUpdateIn, responses=DeploymentOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        deployment = self.get_object()
        data = DeploymentUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        deployment = service_call(
            api_services.deployment_update,
            deployment=deployment,
            changes=data.validated_data,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(DeploymentOut(deployment).data)

    def destroy(self, request: Request, pk: str) -> Response:
        service_call(
            api_services.deployment_delete, deployment=self.get_object(), actor=self.actor, context=self.audit_context
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=DeploymentShareIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def share(self, request: Request, pk: str) -> Response:
        """Choose the organisations a platform deployment serves (superadmin only)."""
        deployment = self.get_object()
        if not self.principal.is_superadmin:
            raise PermissionDenied("Only the platform superadmin shares platform deployments.")
        data = DeploymentShareIn(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = service_call(
            api_services.deployment_share,
            deployment=deployment,
            organizations=data.validated_data["organizations"],
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(DeploymentOut(deployment).data)


class ReplicaViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Running engines of the deployments the caller may see."""

    model = Replica
    serializer_class = ReplicaOut
    filterset_fields = ["deployment", "state"]
    ordering_fields = ["created_at", "state", "last_heartbeat_at"]

    def base_queryset(self) -> Any:
        return Replica.objects.all()
