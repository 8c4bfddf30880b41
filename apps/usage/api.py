"""REST endpoints for usage: the records of `/v1` requests, their sums per day, model and key, and the dead letters
of the usage flush (superadmin)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit.api import IsSuperadmin
from apps.rbac.drf import TenantFilterSet, TenantViewSet
from apps.rbac.drf_input import UtcDateTimeFilter
from apps.usage.backlog import dead_letters_list, usage_backlog
from apps.usage.gpu_selectors import GpuCostRow, gpu_costs, gpu_costs_csv
from apps.usage.models import GpuUsageSpan, UsageDeploymentRollup, UsageRecord, UsageRollup
from apps.usage.selectors import usage_summary
from apps.usage.serializers import (
    GpuCostRowOut,
    GpuCostsIn,
    UsageDeadLettersOut,
    UsageDeadLettersReplayedOut,
    UsageRecordOut,
    UsageSummaryIn,
    UsageSummaryRowOut,
)
from apps.usage.services import usage_dead_letters_replay
from inferia_runtime.redis_clients import sync_redis


class UsageFilter(TenantFilterSet):
    since = UtcDateTimeFilter(field_name="started_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = UsageRecord
        fields = [
            "organization",
            "team",
            "api_key",
            "deployment",
            "model",
            "outcome",
            "endpoint",
            "request_id",
            "client_request_id",
        ]


class UsageRecordViewSet(mixins.ListModelMixin, TenantViewSet):
    """One row per `/v1` request of the caller's organisations, newest first, and sums of them."""

    model = UsageRecord
    serializer_class = UsageRecordOut
    filterset_class = UsageFilter
    ordering_fields = ["started_at", "cost_micros", "latency_ms"]

    @extend_schema(parameters=[UsageSummaryIn], responses=UsageSummaryRowOut(many=True))
    # One row per group, not pages of records: neither the records' pagination nor their filters apply.
    @action(detail=False, methods=["get"], pagination_class=None, filter_backends=[])
    def summary(self, request: Request) -> Response:
        """Requests, tokens, cost and errors summed per day (UTC), model and/or key: `?group_by=day&group_by=model`.
        Read from the hourly rollups, so it covers more than the raw records' retention."""
        params = UsageSummaryIn(data=request.query_params)
        params.is_valid(raise_exception=True)
        values = params.validated_data
        rollups = UsageRollup.objects.restrict(self.principal)
        rows = usage_summary(
            records=rollups,
            group_by=values["group_by"],
            since=values.get("since"),
            until=values.get("until"),
            organization_id=values.get("organization"),
            model=values.get("model", ""),
            api_key_id=values.get("api_key"),
            team_id=values.get("team"),
        )
        return Response(UsageSummaryRowOut(rows, many=True).data)

    def _gpu_costs(self, request: Request) -> list[GpuCostRow]:
        params = GpuCostsIn(data=request.query_params)
        params.is_valid(raise_exception=True)
        values = params.validated_data
        now = timezone.now()
        filters: dict[str, Any] = {
            f"{name}_id": values[name] for name in ("organization", "team", "deployment") if name in values
        }
        rollup_filters = {name: value for name, value in filters.items() if name != "team_id"}
        return gpu_costs(
            spans=GpuUsageSpan.objects.restrict(self.principal).filter(**filters),
            rollups=UsageDeploymentRollup.objects.restrict(self.principal).filter(**rollup_filters),
            since=values.get("since") or now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
            until=values.get("until") or now,
            group_by=values["group_by"],
            now=now,
        )

    @extend_schema(parameters=[GpuCostsIn], responses=GpuCostRowOut(many=True))
    @action(detail=False, methods=["get"], url_path="gpu-costs", pagination_class=None, filter_backends=[])
    def gpu_costs(self, request: Request) -> Response:
        """GPU time and cost per deployment (or team, or organisation: `?group_by=`) over a period, beside the tokens
        served and their cost, and the GPU cost per million tokens. Each replica counts from when it first served
        until it stopped, at its pool's price per GPU-hour times its GPUs; integer micro-units."""
        return Response(GpuCostRowOut(self._gpu_costs(request), many=True).data)

    @extend_schema(
        parameters=[GpuCostsIn], responses={(200, "text/csv"): OpenApiResponse(description="The rows as CSV.")}
    )
    @action(detail=False, methods=["get"], url_path="gpu-costs/export", pagination_class=None, filter_backends=[])
    def gpu_costs_export(self, request: Request) -> HttpResponse:
        """The same rows as CSV (a header, then one line per row)."""
        body = "".join(gpu_costs_csv(self._gpu_costs(request)))
        response = HttpResponse(body, content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="gpu-costs-{timezone.now():%Y%m%d-%H%M%S}.csv"'
        return response

    @extend_schema(responses=UsageDeadLettersOut)
    @action(detail=False, methods=["get"], url_path="dead-letters", permission_classes=[IsSuperadmin])
    def dead_letters(self, request: Request) -> Response:
        """Usage events the worker could not store (superadmin): how many, the oldest 100, and the flush's lag."""
        client = sync_redis()
        backlog = usage_backlog(client)
        letters = [letter.as_dict() for letter in dead_letters_list(client, limit=100)]
        return Response(
            UsageDeadLettersOut(
                {
                    "count": backlog.dead_letters,
                    "waiting": backlog.waiting,
                    "lag_seconds": backlog.lag_seconds,
                    "results": letters,
                }
            ).data
        )

    @extend_schema(request=None, responses=UsageDeadLettersReplayedOut)
    @action(detail=False, methods=["post"], url_path="dead-letters/replay", permission_classes=[IsSuperadmin])
    def dead_letters_replay(self, request: Request) -> Response:
        """Store the dead letters again with their strings repaired (superadmin); those that still fail stay."""

        replayed = usage_dead_letters_replay(actor=self.actor, context=self.audit_context)
        return Response(UsageDeadLettersReplayedOut({"stored": replayed.stored, "kept": replayed.kept}).data)
