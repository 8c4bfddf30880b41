"""REST endpoints for model routes (`/api/model-routes/`): traffic splits over deployments, with fallbacks.

Targets are named by served model name; the service resolves them among the deployments the route's organisation
may use, so a name of another organisation's deployment reads as unknown (400), and a route name already served is
a 409 naming the holder."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.compute.api import conflicts_as_409
from apps.compute.models import ModelRoute
from apps.compute.route_services import (
    DESCRIPTION_MAX,
    FALLBACKS_MAX,
    SPLIT_TARGETS_MAX,
    WEIGHT_MAX,
    SplitTarget,
    model_route_create,
    model_route_delete,
    model_route_snapshot,
    model_route_update,
)
from apps.orgs.models import Organization
from apps.rbac.drf import TenantRelatedField, TenantViewSet, service_call


class SplitTargetIn(serializers.Serializer):
    deployment = serializers.CharField(max_length=200, help_text="The deployment's served model name.")
    weight = serializers.IntegerField(min_value=0, max_value=WEIGHT_MAX)


class ModelRouteUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, help_text="The `model` clients ask for.")
    description = serializers.CharField(max_length=DESCRIPTION_MAX, required=False, allow_blank=True)
    splits = SplitTargetIn(many=True, required=False, min_length=1, max_length=SPLIT_TARGETS_MAX)
    fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=FALLBACKS_MAX,
        help_text="Served names of deployments tried in order when the chosen one cannot answer.",
    )


class ModelRouteCreateIn(ModelRouteUpdateIn):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=200, help_text="The `model` clients ask for.")
    splits = SplitTargetIn(many=True, min_length=1, max_length=SPLIT_TARGETS_MAX)


class ModelRouteOut(serializers.ModelSerializer):
    splits = serializers.SerializerMethodField()
    fallbacks = serializers.SerializerMethodField()

    class Meta:
        model = ModelRoute
        fields = ["id", "organization", "name", "description", "splits", "fallbacks", "created_at", "updated_at"]

    def _targets(self, route: ModelRoute) -> dict[str, Any]:
        cache = self.context.setdefault("snapshots", {})
        if route.pk not in cache:
            cache[route.pk] = model_route_snapshot(route)
        return cache[route.pk]  # type: ignore[no-any-return]

    def get_splits(self, route: ModelRoute) -> list[dict[str, Any]]:
        return self._targets(route)["splits"]  # type: ignore[no-any-return]

    def get_fallbacks(self, route: ModelRoute) -> list[dict[str, Any]]:
        return self._targets(route)["fallbacks"]  # type: ignore[no-any-return]


def _splits(values: dict[str, Any]) -> dict[str, Any]:
    if "splits" in values:
        values["splits"] = [SplitTarget(deployment=t["deployment"], weight=t["weight"]) for t in values["splits"]]
    return values


@extend_schema(responses=ModelRouteOut)
class ModelRouteViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Served model names that split traffic over several deployments by weight (a canary, an A/B test), with
    fallbacks tried before the first byte when the chosen deployment cannot answer."""

    model = ModelRoute
    serializer_class = ModelRouteOut
    filterset_fields = ["organization", "name"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]

    def base_queryset(self) -> QuerySet[Any]:
        return ModelRoute.objects.prefetch_related("targets__deployment")

    @extend_schema(request=ModelRouteCreateIn, responses={201: ModelRouteOut, 409: None})
    def create(self, request: Request) -> Response:
        data = ModelRouteCreateIn(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        values = _splits(dict(data.validated_data))
        self.check_may_add(values["organization"])
        route = service_call(
            conflicts_as_409(model_route_create), **values, actor=self.actor, context=self.audit_context
        )
        return Response(ModelRouteOut(route).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ModelRouteUpdateIn, responses={200: ModelRouteOut, 409: None})
    def partial_update(self, request: Request, pk: str) -> Response:
        route = self.get_object()  # 404/403 before any 400
        data = ModelRouteUpdateIn(data=request.data, partial=True, context={"request": request})
        data.is_valid(raise_exception=True)
        route = service_call(
            conflicts_as_409(model_route_update),
            route=route,
            **_splits(dict(data.validated_data)),
            actor=self.actor,
            context=self.audit_context,
        )
        return Response(ModelRouteOut(route).data)

    def destroy(self, request: Request, pk: str) -> Response:
        service_call(model_route_delete, route=self.get_object(), actor=self.actor, context=self.audit_context)
        return Response(status=status.HTTP_204_NO_CONTENT)
