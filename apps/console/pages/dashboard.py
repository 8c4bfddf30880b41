"""The overview dashboard: one organisation's usage (or the platform's, for the superadmin) over a chosen range,
its latency, throughput and failures, its engines' load over time, its busiest models, keys and teams, the live load
of its replicas, its budgets' burn, the guardrails that fired, and what its deployments' GPUs cost beside the tokens
they served.

The view parses the organisation and range, calls the owning apps' selectors (usage, the replicas' live load,
policies' budget burn) with `.restrict()`-ed querysets, and renders; the charts draw from a JSON island in the page
with the vendored uPlot."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from apps.compute.load_selectors import deployment_load_series
from apps.compute.models import ModelDeployment, Replica
from apps.compute.routing import replicas_live_load
from apps.console.metric_charts import metric_panels
from apps.console.pages.support import page_principal
from apps.console.pages.usage import FAILED
from apps.console.scope import OrgScope, org_scope_get
from apps.policies.models import Policy
from apps.policies.selectors import budget_burn
from apps.usage import selectors as usage
from apps.usage.gpu_selectors import gpu_costs
from apps.usage.latency_selectors import usage_latency_series
from apps.usage.models import (
    GpuUsageSpan,
    UsageDeploymentRollup,
    UsageKeyRollup,
    UsageModelDayRollup,
    UsageModelRollup,
    UsageRecord,
    UsageRollup,
)
from inferia_runtime.money import money_currency


def _in_scope(queryset: Any, scope: OrgScope, field: str = "organization_id") -> Any:
    if scope.platform:
        return queryset
    return queryset.filter(**{field: scope.organization_id})


@login_required
@require_GET
def dashboard_view(request: HttpRequest) -> HttpResponse:
    scope = org_scope_get(request, model=UsageRollup, platform_view=True)
    range_name = request.GET.get("range", usage.DEFAULT_RANGE)
    if range_name not in usage.RANGES:
        range_name = usage.DEFAULT_RANGE
    context: dict[str, Any] = {
        "scope": scope,
        "range_name": range_name,
        "ranges": list(usage.RANGES),
        "currency": money_currency(),
    }
    if scope.organization is None and not scope.platform:
        return render(request, "console/dashboard/index.html", context)
    who = page_principal(request)
    since, until, bucket = usage.range_window(range_name)
    rollups = _in_scope(UsageRollup.objects.restrict(who), scope)
    by_model = _in_scope(UsageModelRollup.objects.restrict(who), scope)
    by_key = _in_scope(UsageKeyRollup.objects.restrict(who), scope)
    overview = usage.usage_overview(by_model=by_model, since=since, until=until, bucket=bucket)
    series = overview.series
    replicas = _in_scope(Replica.objects.restrict(who), scope, "deployment__organization_id")
    budgets, budgets_live = budget_burn(policies=_in_scope(Policy.objects.restrict(who), scope))
    records = _in_scope(UsageRecord.objects.restrict(who), scope)
    deployments = _in_scope(ModelDeployment.objects.restrict(who), scope)
    panels = metric_panels(
        # Day buckets (a month) from the daily per-model rollups: a few rows a day instead of a few an hour.
        latency=usage_latency_series(
            rollups=_in_scope(UsageModelDayRollup.objects.restrict(who), scope) if bucket == "day" else by_model,
            since=since,
            until=until,
            bucket=bucket,
        ),
        load=deployment_load_series(
            deployments=deployments,
            since=since,
            until=until,
            fine_seconds=settings.INFERIA_LOAD_SAMPLE_SECONDS,
        ),
        bucket=bucket,
        range_name=range_name,
    )
    context.update(
        series=series,
        chart={
            "bucket": bucket,
            "x": series.buckets,
            "requests": series.requests,
            "errors": series.errors,
            "tokens": series.tokens,
            # Chart heights only: a float is fine here; every amount shown as text goes through `spend`/`money`.
            "spend": [micros / 1_000_000 for micros in series.cost_micros],
            # A bucket without requests has no error rate: a gap, not 0%.
            "error_rate": [
                round(100 * errors / requests, 2) if requests else None
                for requests, errors in zip(series.requests, series.errors, strict=True)
            ],
        },
        panels=panels,
        top_models=overview.top_models,
        top_keys=usage.usage_top_keys(rollups=rollups, by_key=by_key, since=since, until=until),
        top_teams=overview.top_teams,
        load=replicas_live_load(replicas=replicas),
        budgets=budgets,
        budgets_live=budgets_live,
        guardrails=usage.guardrails_fired(records=records, since=since, until=until),
        gpu_costs=gpu_costs(
            spans=_in_scope(GpuUsageSpan.objects.restrict(who), scope),
            rollups=_in_scope(UsageDeploymentRollup.objects.restrict(who), scope),
            since=since,
            until=until,
        ),
        gpu_since=since.isoformat(),
        errors_url=_errors_url(scope, since),
    )
    return render(request, "console/dashboard/index.html", context)


def _errors_url(scope: OrgScope, since: Any) -> str:
    """The usage list of the range's failed requests (the days it covers: the list filters by day)."""
    query = {"outcome": FAILED, "since": timezone.localtime(since).date().isoformat()}
    if scope.organization is not None and not scope.platform:
        query["org"] = scope.organization.slug
    return f"{reverse('console:usage')}?{urlencode(query)}"
