"""REST endpoints for notification channels (create with the secret shown once, list, edit, delete, test-send) and
the deliveries made to them (read only). Every query goes through `.restrict()`; every write through a service."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.notifications import services
from apps.notifications.models import Channel, Delivery
from apps.notifications.serializers import (
    ChannelCreatedOut,
    ChannelCreateIn,
    ChannelOut,
    ChannelUpdateIn,
    DeliveryOut,
)
from apps.rbac.drf import (
    ServiceCreateMixin,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantViewSet,
    service_call,
    service_schema,
)


@service_schema(detail_out=ChannelOut, update_in=ChannelUpdateIn, create_in=ChannelCreateIn,
                create_responses={201: ChannelCreatedOut})  # fmt: skip
class ChannelViewSet(
    ServiceCreateMixin,
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantViewSet,
):
    """Notification channels of the caller's organisations; a webhook's secret is never shown after creation."""

    model = Channel
    serializer_class = ChannelOut
    filterset_fields = ["organization", "kind", "enabled"]
    search_fields = ["name"]
    ordering_fields = ["name", "created_at"]
    tenant_actions = {"test": "change"}
    create_in = ChannelCreateIn
    create_service = staticmethod(services.channel_create)
    service_object = "channel"
    update_in = ChannelUpdateIn
    update_service = staticmethod(services.channel_update)
    delete_service = staticmethod(services.channel_delete)

    def created_data(self, created: Any) -> Any:
        data = ChannelCreatedOut(created.channel).data
        data["secret"] = created.secret
        return data

    @extend_schema(request=None, responses={202: DeliveryOut})
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        """Queue a test message to the channel; its delivery shows how it went."""
        delivery = service_call(
            services.channel_test_send, channel=self.get_object(), actor=self.actor, context=self.audit_context
        )
        return Response(DeliveryOut(Delivery.objects.select_related("channel").get(pk=delivery.pk)).data,
                        status=status.HTTP_202_ACCEPTED)  # fmt: skip


class DeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantViewSet):
    """Deliveries to the caller's organisations' channels, newest first."""

    model = Delivery
    serializer_class = DeliveryOut
    filterset_fields = ["organization", "channel", "status", "event_kind"]
    ordering_fields = ["created_at"]

    def base_queryset(self) -> Any:
        return Delivery.objects.select_related("channel")
