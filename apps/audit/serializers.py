"""REST shapes of audit events, checkpoints and usage."""

from __future__ import annotations

from rest_framework import serializers

from apps.audit.models import AuditCheckpoint, AuditEvent, UsageRecord


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


class UsageRecordOut(serializers.ModelSerializer):
    class Meta:
        model = UsageRecord
        fields = [
            "request_id",
            "client_request_id",
            "started_at",
            "organization",
            "team",
            "api_key",
            "deployment",
            "endpoint",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "cost_micros",
            "ttft_ms",
            "latency_ms",
            "status_code",
            "outcome",
            "error_code",
            "streamed",
        ]


class UsageSummaryIn(serializers.Serializer):
    group_by = serializers.MultipleChoiceField(choices=["day", "model", "key"], default={"day"})
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    organization = serializers.IntegerField(required=False)
    model = serializers.CharField(required=False)
    api_key = serializers.IntegerField(required=False)
    team = serializers.IntegerField(required=False)


class UsageSummaryRowOut(serializers.Serializer):
    day = serializers.DateField(required=False)
    model = serializers.CharField(required=False)
    api_key = serializers.IntegerField(required=False, allow_null=True)
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cost_micros = serializers.IntegerField()
    errors = serializers.IntegerField()


class UsageDeadLetterOut(serializers.Serializer):
    id = serializers.CharField()
    source_id = serializers.CharField(help_text="The event's id in the usage stream.")
    failed_at = serializers.FloatField(help_text="POSIX time the worker gave up on it.")
    reason = serializers.CharField()
    event = serializers.CharField(help_text="The event as the gateway encoded it.")


class UsageDeadLettersOut(serializers.Serializer):
    count = serializers.IntegerField()
    waiting = serializers.IntegerField(help_text="Usage events not stored yet.")
    lag_seconds = serializers.FloatField(help_text="Age of the oldest usage event not stored yet.")
    results = UsageDeadLetterOut(many=True)


class UsageDeadLettersReplayedOut(serializers.Serializer):
    stored = serializers.IntegerField()
    kept = serializers.IntegerField()
