"""REST shapes of usage: records, sums per day, model and key, and the dead letters of the flush."""

from __future__ import annotations

from rest_framework import serializers

from apps.usage.events import USAGE_EXPORT_COLUMNS
from apps.usage.models import UsageRecord


class UsageRecordOut(serializers.ModelSerializer):
    class Meta:
        model = UsageRecord
        # The usage event's exported fields, references by their field names (`organization`, not `organization_id`).
        fields = [UsageRecord._meta.get_field(column).name for column in USAGE_EXPORT_COLUMNS]


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
