"""REST shapes of notification channels and deliveries. A webhook's signing secret appears in one response only:
the channel's creation."""

from __future__ import annotations

from rest_framework import serializers

from apps.notifications.models import Channel, Delivery
from apps.notifications.services import RECIPIENTS_MAX, SUBSCRIBABLE
from apps.orgs.models import Organization
from apps.rbac.drf import TenantRelatedField

EVENT_CHOICES = sorted(SUBSCRIBABLE)


class ChannelOut(serializers.ModelSerializer):
    has_secret = serializers.SerializerMethodField(help_text="Whether a signing secret is stored (never shown).")

    class Meta:
        model = Channel
        fields = ["id", "organization", "name", "kind", "url", "recipients", "events", "enabled", "has_secret",
                  "created_at", "updated_at"]  # fmt: skip

    def get_has_secret(self, channel: Channel) -> bool:
        return bool(channel.secret_encrypted)


class ChannelCreatedOut(ChannelOut):
    secret = serializers.CharField(
        read_only=True, help_text="Webhooks: the signing secret. Shown this once; store it now."
    )

    class Meta(ChannelOut.Meta):
        fields = [*ChannelOut.Meta.fields, "secret"]


class ChannelCreateIn(serializers.Serializer):
    organization = TenantRelatedField(Organization)
    name = serializers.CharField(max_length=200)
    kind = serializers.ChoiceField(choices=Channel.Kind.choices)
    url = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    recipients = serializers.ListField(
        child=serializers.EmailField(), required=False, default=list, max_length=RECIPIENTS_MAX
    )
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), required=False, default=list)
    enabled = serializers.BooleanField(required=False, default=True)


class ChannelUpdateIn(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    url = serializers.CharField(max_length=2000, required=False)
    recipients = serializers.ListField(child=serializers.EmailField(), required=False, max_length=RECIPIENTS_MAX)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), required=False)
    enabled = serializers.BooleanField(required=False)


class DeliveryOut(serializers.ModelSerializer):
    channel_name = serializers.CharField(source="channel.name", read_only=True)

    class Meta:
        model = Delivery
        fields = ["id", "organization", "channel", "channel_name", "event_kind", "summary", "status", "attempts",
                  "last_error", "response_status", "created_at", "last_attempt_at", "sent_at"]  # fmt: skip
