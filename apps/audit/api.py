"""REST endpoints for the audit log (filtered list, export to CSV or JSON Lines) and its checkpoints
(superadmin)."""

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
from apps.audit.models import AuditCheckpoint, AuditEvent
from apps.audit.selectors import audit_events_csv, audit_events_jsonl
from apps.audit.serializers import AuditCheckpointOut, AuditEventOut
from apps.audit.services import audit_checkpoint_take
from apps.rbac.drf import HasPrincipal, TenantFilterSet, TenantViewSet, service_call
from apps.rbac.drf_input import UtcDateTimeFilter


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
