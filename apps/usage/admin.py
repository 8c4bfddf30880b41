"""Django admin of usage: records and hourly rollups, read-only (the worker writes them)."""

from __future__ import annotations

from django.contrib import admin

from apps.audit.admin import ReadOnlyAdmin
from apps.usage.models import UsageRecord, UsageRollup


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "request_id",
        "started_at",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "cost_micros",
        "status_code",
        "outcome",
    ]
    list_filter = ["outcome", "streamed", "estimated", "started_at"]
    search_fields = ["request_id", "model"]
    date_hierarchy = "started_at"
    show_full_result_count = False


@admin.register(UsageRollup)
class UsageRollupAdmin(ReadOnlyAdmin):
    list_display = ["hour", "organization_id", "model", "requests", "errors", "prompt_tokens", "completion_tokens"]
    list_filter = ["hour"]
    search_fields = ["model"]
    date_hierarchy = "hour"
    show_full_result_count = False
