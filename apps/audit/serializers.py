"""REST shapes of audit events and checkpoints."""

from __future__ import annotations

from rest_framework import serializers

from apps.audit.models import AuditCheckpoint, AuditEvent


class AuditEventOut(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "occurred_at",
            "organization",
            "actor_user",
            "actor_key",
            "actor_label",
            "action",
            "target_type",
            "target_id",
            "target_repr",
            "changes",
            "ip_address",
            "user_agent",
            "request_id",
            "outcome",
            "prev_hash",
            "hash",
        ]


class AuditCheckpointOut(serializers.ModelSerializer):
    class Meta:
        model = AuditCheckpoint
        fields = ["id", "created_at", "seq", "hash", "taken_by"]
