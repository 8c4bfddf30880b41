"""The usage explorer: every `/v1` request of the user's organisations, filtered by date range, model, key, team
and outcome, in keyset pages over the indexed `started_at` (no COUNT over the table), with totals read from the
rollups and a streamed CSV export of the same filter; and one request's detail page."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet, Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.audit.exports import CSV_CONTENT_TYPE, export_response
from apps.console.pages.support import (
    keyset_page,
    organization_current_slug,
    organization_filter,
    organizations_visible,
    page_principal,
    query_without,
)
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.usage.models import RequestCapture, UsageModelRollup, UsageRecord, UsageRollup
from apps.usage.selectors import usage_records_csv, usage_request_detail

# A key filter is a prefix: at most this many matching keys are searched.
KEY_MATCH_LIMIT = 50
# What a request id can be (ours are hex; the column holds 64 characters).
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,64}")
# The outcome filter's "every outcome but completed": what the rollups (and the dashboard) count as errors.
FAILED = "failed"


class UsageFilterForm(forms.Form):
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To (inclusive)", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    model = forms.CharField(label="Model", required=False, max_length=200)
    key = forms.CharField(label="Key (prefix or id)", required=False, max_length=64)
    request_id = forms.CharField(label="Request id (ours or the caller's)", required=False, max_length=128)
    team = forms.IntegerField(label="Team", required=False)
    outcome = forms.ChoiceField(
        label="Outcome",
        required=False,
        choices=[("", "Any outcome"), (FAILED, "Any failure"), *UsageRecord.Outcome.choices],
    )


def _day_start(day: Any) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


def usage_filtered(
    request: HttpRequest, form: UsageFilterForm
) -> tuple[QuerySet[UsageRecord], QuerySet[UsageRollup] | QuerySet[UsageModelRollup]]:
    """The user's usage records, and the rollups their totals are read from, narrowed by the form (rollups ignore
    the outcome filter). The rollups are the per-model hourly ones (a few rows per hour), or the hourly per-key ones
    when a key is asked for."""
    principal = page_principal(request)
    values = form.cleaned_data if form.is_valid() else {}
    key = (values.get("key") or "").strip()
    records = UsageRecord.objects.restrict(principal)
    rollups: QuerySet[Any] = ((UsageRollup if key else UsageModelRollup).objects.all()).restrict(principal)
    records, _ = organization_filter(request, records)
    rollups, _ = organization_filter(request, rollups)
    if not form.is_valid():
        return records.none(), rollups.none()
    if values["since"]:
        records = records.filter(started_at__gte=_day_start(values["since"]))
        rollups = rollups.filter(hour__gte=_day_start(values["since"]))
    if values["until"]:
        end = _day_start(values["until"]) + timedelta(days=1)
        records = records.filter(started_at__lt=end)
        rollups = rollups.filter(hour__lt=end)
    if values["model"].strip():
        records = records.filter(model=values["model"].strip())
        rollups = rollups.filter(model=values["model"].strip())
    if key:
        if key.isdigit():
            records, rollups = records.filter(api_key_id=int(key)), rollups.filter(api_key_id=int(key))
        else:
            # Resolved to ids first, so the records query is an index lookup on (api_key, started_at).
            keys = ApiKey.objects.filter(prefix__startswith=key).restrict(principal)
            key_ids = list(keys.values_list("pk", flat=True)[:KEY_MATCH_LIMIT])
            records = records.filter(api_key_id__in=key_ids)
            rollups = rollups.filter(api_key_id__in=key_ids)
    if values["team"]:
        records, rollups = records.filter(team_id=values["team"]), rollups.filter(team_id=values["team"])
    if values["outcome"] == FAILED:
        records = records.exclude(outcome=UsageRecord.Outcome.OK)
    elif values["outcome"]:
        records = records.filter(outcome=values["outcome"])
    request_id = (values.get("request_id") or "").strip()
    if request_id:
        records = records.filter(Q(request_id=request_id) | Q(client_request_id=request_id))
    return records, rollups


@never_cache
@login_required
@require_GET
def usage_view(request: HttpRequest) -> HttpResponse:
    form = UsageFilterForm(request.GET)
    records, rollups = usage_filtered(request, form)
    page = keyset_page(
        records.select_related("api_key", "team").only(
            "request_id",
            "client_request_id",
            "started_at",
            "model",
            "endpoint",
            "prompt_tokens",
            "completion_tokens",
            "cost_micros",
            "latency_ms",
            "ttft_ms",
            "status_code",
            "outcome",
            "error_code",
            "error_message",
            "api_key__prefix",
            "api_key__name",
            "team__name",
        ),
        request=request,
        fields=("started_at", "pk"),
    )
    totals = rollups.order_by().aggregate(
        requests=Sum("requests"),
        errors=Sum("errors"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        cost=Sum("cost_micros"),
    )
    teams = Team.objects.restrict(page_principal(request)).select_related("organization")
    context = {
        "form": form,
        "page": page,
        "totals": totals,
        "teams": list(teams.order_by("organization__name", "name")),
        "query": query_without(request, "older", "newer"),
        "export_query": query_without(request, "older", "newer"),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
        "outcome_filtered": bool(form.is_valid() and form.cleaned_data["outcome"]),
    }
    return render(request, "console/usage/explorer.html", context)


@never_cache
@login_required
@require_GET
def usage_request_view(request: HttpRequest, request_id: str) -> HttpResponse:
    """One request: its ids, outcome and error, who sent it, where it ran, its timings, tokens and cost, the
    guardrails that fired, and its prompt and answer when its organisation keeps them. Another organisation's
    request is a 404, as is an id that does not exist."""
    if _REQUEST_ID.fullmatch(request_id) is None:
        raise Http404  # no request has such an id (and PostgreSQL refuses a NUL in a query)
    principal = page_principal(request)
    detail = usage_request_detail(
        records=UsageRecord.objects.restrict(principal),
        captures=RequestCapture.objects.restrict(principal),
        request_id=request_id,
    )
    if detail is None:
        raise Http404
    return render(request, "console/usage/request.html", {"r": detail.record, "capture": detail.capture})


@login_required
@require_GET
def usage_export_view(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered records as CSV, newest first, streamed in batches (asynchronously under ASGI): server memory stays
    flat whatever the number of rows."""
    form = UsageFilterForm(request.GET)
    records, _ = usage_filtered(request, form)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    return export_response(
        request, usage_records_csv(records=records), content_type=CSV_CONTENT_TYPE, filename=f"usage-{stamp}.csv"
    )


__all__ = ["FAILED", "usage_export_view", "usage_filtered", "usage_request_view", "usage_view"]
