"""REST shapes of usage: records, sums per day, model and key, and the dead letters of the flush."""

from __future__ import annotations

from typing import Any

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


class GpuCostsIn(serializers.Serializer):
    group_by = serializers.ChoiceField(choices=["organization", "team", "deployment"], default="deployment")
    since = serializers.DateTimeField(required=False, help_text="Default: the start of the current UTC month.")
    until = serializers.DateTimeField(required=False, help_text="Default: now.")
    organization = serializers.IntegerField(required=False)
    team = serializers.IntegerField(required=False)
    deployment = serializers.IntegerField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError("since must be before until")
        return attrs


class GpuCostRowOut(serializers.Serializer):
    organization = serializers.IntegerField(source="organization_id", allow_null=True)
    team = serializers.IntegerField(source="team_id", allow_null=True, help_text="The team the GPUs are charged to.")
    deployment = serializers.IntegerField(source="deployment_id", allow_null=True)
    deployment_name = serializers.CharField()
    gpu_seconds = serializers.IntegerField(help_text="GPU-seconds: each replica's serving time times its GPUs.")
    gpu_cost_micros = serializers.IntegerField(help_text="Integer micro-units of the currency.")
    tokens = serializers.IntegerField(help_text="Prompt and completion tokens the deployments served.")
    token_cost_micros = serializers.IntegerField(help_text="What those tokens were charged, micro-units.")
    gpu_cost_per_mtok_micros = serializers.IntegerField(
        allow_null=True, help_text="GPU cost per million tokens served, micro-units; null without tokens."
    )
