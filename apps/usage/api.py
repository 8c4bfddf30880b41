"""REST endpoints for usage: the records of `/v1` requests, their sums per day, model and key, and the dead letters
of the usage flush (superadmin)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit.api import IsSuperadmin
from apps.rbac.drf import TenantFilterSet, TenantViewSet
from apps.rbac.drf_input import UtcDateTimeFilter
from apps.usage.backlog import dead_letters_list, usage_backlog
from apps.usage.models import UsageRecord, UsageRollup
from apps.usage.selectors import usage_summary
from apps.usage.serializers import (
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
