"""REST endpoints for the audit log (filtered list, export to CSV or JSON Lines), its checkpoints (superadmin)
and usage (records, and sums per day, model and key)."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from django_filters import rest_framework as django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit.exports import CSV_CONTENT_TYPE, export_response
from apps.audit.models import AuditCheckpoint, AuditEvent, UsageRecord, UsageRollup
from apps.audit.selectors import audit_events_csv, audit_events_jsonl, usage_summary
from apps.audit.serializers import (
    AuditCheckpointOut,
    AuditEventOut,
    UsageDeadLettersOut,
    UsageDeadLettersReplayedOut,
    UsageRecordOut,
    UsageSummaryIn,
    UsageSummaryRowOut,
)
from apps.audit.services import audit_checkpoint_take
from apps.audit.usage_backlog import dead_letters_list, usage_backlog
from apps.rbac.drf import HasPrincipal, TenantFilterSet, TenantViewSet, service_call
from apps.rbac.drf_input import UtcDateTimeFilter
from apps.rbac.restrict import restrict
from inferia_runtime.redis_clients import sync_redis


class AuditEventFilter(TenantFilterSet):
    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="icontains")
    action = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ["organization", "actor_user", "actor_key", "target_type", "target_id", "outcome"]


class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """The audit events of the caller's organisations (read-only: the log is append-only)."""

    model = AuditEvent
    serializer_class = AuditEventOut
    filterset_class = AuditEventFilter
    search_fields = ["actor_label", "action", "target_repr", "request_id"]
    ordering_fields = ["seq", "occurred_at"]
    lookup_field = "seq"

    @extend_schema(
        parameters=[OpenApiParameter("type", str, enum=["jsonl", "csv"], default="jsonl")],
        responses={(200, "application/jsonl"): OpenApiTypes.STR, (200, "text/csv"): OpenApiTypes.STR},
    )
    @action(detail=False, methods=["get"])
    def export(self, request: Request) -> StreamingHttpResponse:
        """The filtered events, oldest first, as JSON Lines (default) or CSV, streamed."""
        events = self.filter_queryset(self.get_queryset())
        if request.query_params.get("type") == "csv":
            return export_response(
                request, audit_events_csv(events=events), content_type=CSV_CONTENT_TYPE, filename="audit.csv"
            )
        return export_response(
            request, audit_events_jsonl(events=events), content_type="application/jsonl", filename="audit.jsonl"
        )


class IsSuperadmin(HasPrincipal):
    message = "Only the platform superadmin, signed in (not with an API key), may read or take audit checkpoints."

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and view.principal.is_superadmin


class AuditCheckpointViewSet(mixins.ListModelMixin, TenantViewSet):
    """Checkpoints of the audit chain head, for the platform superadmin: list them (to keep a copy elsewhere)
    or take one now."""

    model = AuditCheckpoint
    serializer_class = AuditCheckpointOut
    permission_classes = [IsSuperadmin]
    ordering_fields = ["seq", "created_at"]

    def get_queryset(self) -> Any:
        # Not tenant data: the chain is global, and IsSuperadmin already let only the superadmin in.
        return AuditCheckpoint.objects.all()

    @extend_schema(request=None, responses={201: AuditCheckpointOut})
    def create(self, request: Request) -> Response:
        checkpoint = service_call(audit_checkpoint_take, actor=self.actor, context=self.audit_context)
        return Response(AuditCheckpointOut(checkpoint).data, status=status.HTTP_201_CREATED)


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
        rollups = restrict(UsageRollup.objects.all(), principal=self.principal, action="view")
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
        from apps.gateway.services import usage_dead_letters_replay  # the worker's store, not a domain import

        replayed = usage_dead_letters_replay(actor=self.actor, context=self.audit_context)
        return Response(UsageDeadLettersReplayedOut({"stored": replayed.stored, "kept": replayed.kept}).data)
