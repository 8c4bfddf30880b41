"""REST endpoints for the compute inventory: providers, pools, deployments (with sharing and team grants) and
replicas (read-only: the worker manages them)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

from django.db import IntegrityError
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, AuthenticationFailed, PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.compute import inventory_services, lora, rollout, services
from apps.compute.external_registration import external_deployment_register
from apps.compute.health import engine_load_from_report, replica_heartbeat_record
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.compute.node_tokens import NODE_TOKEN_PREFIX, node_token_hash
from apps.compute.placement import deployment_placement_set
from apps.compute.replica_logs import replica_logs_recent
from apps.compute.serializers import (
    DeploymentCreateIn,
    DeploymentEventOut,
    DeploymentOut,
    DeploymentPlacementIn,
    DeploymentScaleIn,
    DeploymentShareIn,
    DeploymentStopIn,
    DeploymentUpdateIn,
    ExternalDeploymentCreateIn,
    LoraAdapterIn,
    LoraAdapterRemoveIn,
    NodeHeartbeatIn,
    NodeHeartbeatOut,
    PoolCreateIn,
    PoolOut,
    PoolUpdateIn,
    ProviderCreateIn,
    ProviderOut,
    ProviderUpdateIn,
    ReplicaLogsOut,
    ReplicaLogsQueryIn,
    ReplicaOut,
    RolloutProgressOut,
)
from apps.rbac.api import GRANT_TENANT_ACTIONS, GrantActionsMixin
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantViewSet,
    service_call,
    service_schema,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This conflicts with an existing record."
    default_code = "conflict"


def conflicts_as_409(service: Callable[..., Any]) -> Callable[..., Any]:
    """`service` with a name its owner already uses answered 409 naming the holder (not a constraint's name), and
    a unique row written meanwhile by a concurrent request answered 409 too."""

    @functools.wraps(service)
    def call(**kwargs: Any) -> Any:
        try:
            return service(**kwargs)
        except inventory_services.NameTakenError as error:
            raise Conflict(str(error)) from error
        except IntegrityError as error:
            raise Conflict(
                "A record with this name was created meanwhile; look it up or choose another name."
            ) from error

    return call


@service_schema(detail_out=ProviderOut, create_in=ProviderCreateIn, create_responses={201: ProviderOut, 409: None})
class ProviderViewSet(
    ServiceCreateMixin,
    ServiceDestroyMixin,
    GrantActionsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Where GPU nodes come from. Credentials go in, never come out."""

    model = Provider
    serializer_class = ProviderOut
    filterset_fields = ["organization", "kind"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]
    tenant_actions = GRANT_TENANT_ACTIONS
    service_object = "provider"
    delete_service = staticmethod(inventory_services.provider_delete)
    create_in = ProviderCreateIn
    create_service = staticmethod(conflicts_as_409(inventory_services.provider_create))

    @extend_schema(request=ProviderUpdateIn, responses=ProviderOut)
    def partial_update(self, request: Request, pk: str) -> Response:
        provider = self.get_object()
        data = ProviderUpdateIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        credentials = changes.pop("credentials", None)
        provider = service_call(
            conflicts_as_409(inventory_services.provider_update),
            provider=provider,
            changes=changes,
            credentials=credentials,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(ProviderOut(provider).data)


@service_schema(create_in=PoolCreateIn, update_in=PoolUpdateIn, detail_out=PoolOut)
class PoolViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    GrantActionsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Kinds of node a provider can give."""

    model = ComputePool
    serializer_class = PoolOut
    filterset_fields = ["organization", "provider", "gpu_type", "region"]
    search_fields = ["name", "region", "gpu_type"]
    ordering_fields = ["name", "created_at", "cost_per_gpu_hour_micros"]
    tenant_actions = GRANT_TENANT_ACTIONS
    service_object = "pool"
    update_in = PoolUpdateIn
    update_service = staticmethod(conflicts_as_409(inventory_services.pool_update))
    delete_service = staticmethod(inventory_services.pool_delete)
    create_in = PoolCreateIn
    create_service = staticmethod(conflicts_as_409(inventory_services.pool_create))


@service_schema(create_in=DeploymentCreateIn, update_in=DeploymentUpdateIn, detail_out=DeploymentOut)
class DeploymentViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    GrantActionsMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Models served on pools: the organisation's own, and platform deployments shared with it (read-only)."""

    model = ModelDeployment
    serializer_class = DeploymentOut
    filterset_fields = ["organization", "pool", "state", "served_model_name"]
    search_fields = ["name", "served_model_name", "model_id"]
    ordering_fields = ["served_model_name", "created_at", "state"]
    tenant_actions = {
        "external": "add",
        "adapters": "change",
        "adapter_remove": "change",
        "share": "change",
        "placement": "change",
        "scale": "change",
        "stop": "change",
        "start": "change",
        "rollout": "view",
        "rollout_pause": "change",
        "rollout_resume": "change",
        "rollout_rollback": "change",
        **GRANT_TENANT_ACTIONS,
    }
    service_object = "deployment"
    update_in = DeploymentUpdateIn

    def base_queryset(self) -> Any:
        return ModelDeployment.objects.prefetch_related("placement_pools")

    update_service = staticmethod(conflicts_as_409(inventory_services.deployment_update))
    delete_service = staticmethod(inventory_services.deployment_delete)
    create_in = DeploymentCreateIn
    create_service = staticmethod(conflicts_as_409(inventory_services.deployment_create))

    @extend_schema(request=ExternalDeploymentCreateIn, responses={201: DeploymentOut, 200: DeploymentOut, 409: None})
    @action(detail=False, methods=["post"])
    def external(self, request: Request) -> Response:
        """Adopt OpenAI-compatible servers the caller runs, in one call: an `external` provider with the base URLs
        (SSRF-checked) and the upstream key (encrypted, never shown), a pool, and the deployment. The same URLs and
        model under the same served name again change nothing (200, that deployment); other URLs or another model
        under a served name already used are a 409 naming the deployment that has it."""
        data = ExternalDeploymentCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        organization = data.validated_data["organization"]
        for model in (Provider, ComputePool, ModelDeployment):
            self.check_may_add(organization, model)
        deployment, created = service_call(
            conflicts_as_409(external_deployment_register),
            **data.validated_data,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(
            DeploymentOut(deployment).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )

    def _deployment_change(self, request: Request, deployment: Any, service: Any, schema: Any) -> Response:
        """Validate the body with `schema`, then apply `service` to the deployment with its fields, as the caller."""
        data = schema(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = service_call(
            service, deployment=deployment, actor=self.actor, context=self.audit_context, **data.validated_data
        )
        return Response(DeploymentOut(deployment).data)

    @extend_schema(request=DeploymentShareIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def share(self, request: Request, pk: str) -> Response:
        """Choose the organisations a platform deployment serves (superadmin only)."""
        deployment = self.get_object()
        if not self.principal.is_superadmin:
            raise PermissionDenied("Only the platform superadmin shares platform deployments.")
        return self._deployment_change(request, deployment, inventory_services.deployment_share, DeploymentShareIn)

    @extend_schema(request=DeploymentPlacementIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def placement(self, request: Request, pk: str) -> Response:
        """Choose the other pools the deployment's replicas may run on (cost-aware placement); running replicas
        stay where they are."""
        deployment = self.get_object()  # before the body: another owner's deployment is a 404, whatever is sent
        data = DeploymentPlacementIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        deployment = service_call(
            deployment_placement_set,
            deployment=deployment,
            pools=data.validated_data["placement_pools"],
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(DeploymentOut(deployment).data)

    @extend_schema(request=DeploymentScaleIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str) -> Response:
        """Set how many replicas the deployment runs (within min and max); the worker provisions or removes them."""
        return self._deployment_change(request, self.get_object(), services.deployment_scale, DeploymentScaleIn)

    @extend_schema(request=DeploymentStopIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str) -> Response:
        """Stop serving: out of routing at once, then the worker tears the replicas down."""
        return self._deployment_change(request, self.get_object(), services.deployment_stop, DeploymentStopIn)

    @extend_schema(request=DeploymentStopIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        """Start a stopped (or failed) deployment again."""
        return self._deployment_change(request, self.get_object(), services.deployment_start, DeploymentStopIn)

    @extend_schema(responses=RolloutProgressOut)
    @action(detail=True, methods=["get"])
    def rollout(self, request: Request, pk: str) -> Response:
        """The deployment's rollout: its state, the spec rolled to and from, live replicas on each by state."""
        return Response(RolloutProgressOut(rollout.rollout_progress(self.get_object())).data)

    @extend_schema(request=DeploymentStopIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"], url_path="rollout/pause")
    def rollout_pause(self, request: Request, pk: str) -> Response:
        """Hold a rollout where it is."""
        return self._deployment_change(request, self.get_object(), rollout.deployment_rollout_pause, DeploymentStopIn)

    @extend_schema(request=DeploymentStopIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"], url_path="rollout/resume")
    def rollout_resume(self, request: Request, pk: str) -> Response:
        """Carry on with a paused rollout."""
        return self._deployment_change(request, self.get_object(), rollout.deployment_rollout_resume, DeploymentStopIn)

    @extend_schema(request=DeploymentStopIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"], url_path="rollout/rollback")
    def rollout_rollback(self, request: Request, pk: str) -> Response:
        """Roll back to the spec before the last rollout (the new spec's replicas drain away)."""
        return self._deployment_change(
            request, self.get_object(), rollout.deployment_rollout_rollback, DeploymentStopIn
        )

    @extend_schema(request=LoraAdapterIn, responses={201: DeploymentOut})
    @action(detail=True, methods=["post"])
    def adapters(self, request: Request, pk: str) -> Response:
        """Serve a LoRA adapter on the deployment as a model of its own: running replicas load it, new ones start
        with it. (The deployment's `engine_args.lora_modules` lists them.)"""
        deployment = self.get_object()
        data = LoraAdapterIn(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = service_call(
            lora.deployment_lora_add,
            deployment=deployment,
            **data.validated_data,
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(DeploymentOut(deployment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=LoraAdapterRemoveIn, responses=DeploymentOut)
    @action(detail=True, methods=["post"], url_path="adapters/remove")
    def adapter_remove(self, request: Request, pk: str) -> Response:
        """Stop serving a LoRA adapter: out of routing at once, unloaded from the running replicas."""
        deployment = self.get_object()
        data = LoraAdapterRemoveIn(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = service_call(
            lora.deployment_lora_remove,
            deployment=deployment,
            name=data.validated_data["name"],
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(DeploymentOut(deployment).data)

    @extend_schema(responses=DeploymentEventOut(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)  # the newest 200, as a list (not pages)
    def events(self, request: Request, pk: str) -> Response:
        """The deployment's state transitions, newest first, each with its reason."""
        deployment = self.get_object()
        events = deployment.events.order_by("-id")[:200]
        return Response(DeploymentEventOut(events, many=True).data)


class NodeHeartbeatView(APIView):
    """`POST /api/nodes/heartbeat`: a replica's node (behind NAT: a VPS, a DePIN host) reports its state and load.

    Authenticated by the node token the replica got at provisioning (`Authorization: Bearer inf-node-...`), not
    by a user's key; only its hash is stored. A replica is healthy while either the poll or the push is fresh."""

    authentication_classes: ClassVar[list[Any]] = []
    permission_classes: ClassVar[list[Any]] = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="inferia-node"'  # so a bad token is a 401, as for any bearer credential

    @extend_schema(request=NodeHeartbeatIn, responses=NodeHeartbeatOut)
    def post(self, request: Request) -> Response:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        replica = None
        if token.startswith(NODE_TOKEN_PREFIX):
            replica = (
                Replica.objects.filter(node_token_hash=node_token_hash(token))
                .exclude(state__in=(Replica.State.STOPPING, Replica.State.STOPPED))
                .first()
            )
        if replica is None:
            raise AuthenticationFailed("unknown or retired node token")
        data = NodeHeartbeatIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            load = engine_load_from_report(data.validated_data["metrics"]) if "metrics" in data.validated_data else None
        except ValueError as error:
            raise ValidationError({"metrics": str(error)}) from None
        replica = replica_heartbeat_record(replica=replica, state=data.validated_data["state"], load=load)
        return Response(NodeHeartbeatOut({"replica": replica.pk, "state": replica.state}).data)


class ReplicaViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Running engines of the deployments the caller may see."""

    model = Replica
    serializer_class = ReplicaOut
    filterset_fields = ["deployment", "state"]
    ordering_fields = ["created_at", "state", "last_heartbeat_at"]

    def base_queryset(self) -> Any:
        return Replica.objects.all()

    @extend_schema(
        parameters=[OpenApiParameter("tail", int, description="How many of the newest lines (1 to 500, default 100).")],
        responses=ReplicaLogsOut,
    )
    @action(detail=True, methods=["get"])
    def logs(self, request: Request, pk: str) -> Response:
        """The replica's engine output, as the worker captured it while the replica provisioned, started, was
        unhealthy or failed (the web process may not run where the engine does), with credentials masked."""
        replica = self.get_object()
        query = ReplicaLogsQueryIn(data=request.query_params)
        query.is_valid(raise_exception=True)
        lines = replica_logs_recent(replica_ids=[replica.pk], tail=query.validated_data["tail"]).get(replica.pk, [])
        return Response(ReplicaLogsOut({"replica": replica.pk, "state": replica.state, "lines": lines}).data)
