"""Latency histograms and the percentiles read from them: the estimate always lands in the bucket of the true
percentile, merging histograms is adding them (in Python and in PostgreSQL's upserts alike), the usage worker fills
the histograms and the 4xx/5xx counters at every timed grain, and the latency series says "nothing" (None), not 0,
for a range or bucket without requests."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from hypothesis import given
from hypothesis import strategies as st

from apps.usage.histograms import (
    BOUNDS_MS,
    BUCKETS,
    histogram_bucket,
    histogram_count_sql,
    histogram_merge,
    histogram_of,
    histogram_percentile,
)
from apps.usage.latency_selectors import usage_latency_series
from apps.usage.models import UsageDeploymentRollup, UsageModelDayRollup, UsageModelRollup, UsageRollup
from apps.usage.rollups import usage_rollups_rebuild
from apps.usage.services import usage_records_store

latencies = st.lists(st.floats(min_value=0, max_value=300_000, allow_nan=False), min_size=1, max_size=300)
quantiles = st.floats(min_value=0.01, max_value=1.0)


def _bucket_edges(index: int) -> tuple[float, float]:
    lower = float(BOUNDS_MS[index - 1]) if index else 0.0
    upper = float(BOUNDS_MS[index]) if index < len(BOUNDS_MS) else float(BOUNDS_MS[-1])
    return lower, upper


@given(values=latencies, q=quantiles)
def test_the_estimate_lies_in_the_bucket_of_the_true_percentile(values, q):
    ordered = sorted(values)
    true = ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank
    lower, upper = _bucket_edges(histogram_bucket(true))
    estimate = histogram_percentile(histogram_of(values), q)
    assert estimate is not None
    assert lower <= estimate <= upper


@given(first=latencies, second=latencies, q=quantiles)
def test_merging_histograms_is_adding_them(first, second, q):
    merged = histogram_merge(histogram_of(first), histogram_of(second))
    assert merged == histogram_of(first + second)
    assert histogram_percentile(merged, q) == histogram_percentile(histogram_of(first + second), q)


@given(values=latencies, low=quantiles, high=quantiles)
def test_a_higher_quantile_is_never_lower(values, low, high):
    low, high = sorted((low, high))
    histogram = histogram_of(values)
    assert histogram_percentile(histogram, low) <= histogram_percentile(histogram, high)


def test_an_empty_histogram_has_no_percentile_and_a_short_one_reads_as_zeros():
    assert histogram_percentile([], 0.5) is None
    assert histogram_percentile([0] * BUCKETS, 0.95) is None
    assert histogram_merge([], [1, 2]) == [1, 2] + [0] * (BUCKETS - 2)
    # One request of 150 ms: the median is interpolated in (100, 200].
    assert histogram_percentile(histogram_of([150]), 0.5) == 150
    # Above the highest bound nothing is known: the answer is that bound, not a guess beyond it.
    assert histogram_percentile(histogram_of([10**7]), 0.5) == BOUNDS_MS[-1]
    with pytest.raises(ValueError):
        histogram_percentile([1], 0)


@pytest.mark.django_db
@given(values=st.lists(st.floats(min_value=0, max_value=200_000, allow_nan=False), max_size=50))
def test_the_sql_histogram_counts_as_python_does(values):
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {histogram_count_sql('v')} FROM unnest(%s::float8[]) AS t(v)",  # noqa: S608 (constants)
            [values],
        )
        assert cursor.fetchone()[0] == histogram_of(values)


NOW = datetime(2026, 11, 20, 13, 30, tzinfo=UTC)


def _event(org: Any, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4().hex, "started_at": at.timestamp(), "endpoint": "chat.completions",
        "api_key_id": None, "organization_id": org.pk, "team_id": None, "model": "m-1", "deployment_id": None,
        "replica_id": None, "prompt_tokens": 10, "completion_tokens": 50, "cost_micros": 100, "ttft_ms": 40.0,
        "latency_ms": 400.0, "status_code": 200, "outcome": "ok", "error_code": "", "estimated": False,
        "streamed": True, "guardrails": [], **fields,
    }  # fmt: skip


@pytest.mark.django_db
def test_the_usage_worker_fills_the_histograms_and_failure_counters_at_every_timed_grain(org):
    hour = NOW.replace(minute=0)
    ttfts = [15.0, 40.0, 80.0, 260.0]
    batch = [_event(org, hour, ttft_ms=t, latency_ms=t * 10, deployment_id=7) for t in ttfts]
    failures = [
        _event(org, hour, status_code=429, outcome="denied", ttft_ms=None, latency_ms=1.0),
        _event(org, hour, status_code=502, outcome="error", ttft_ms=None, latency_ms=30_000.0, deployment_id=7),
        _event(org, hour, status_code=499, outcome="cancelled", ttft_ms=None, latency_ms=5.0, deployment_id=7),
    ]
    usage_records_store(batch[:2] + failures)
    usage_records_store(batch[2:])  # a second batch merges into the same rows
    usage_records_store(batch[2:])  # and a batch read twice counts once

    for model in (UsageRollup, UsageModelRollup, UsageModelDayRollup):
        row = model.objects.get(organization=org)
        assert row.requests == 7
        assert (row.client_errors, row.server_errors) == (2, 1)
        # Only the requests that were served are timed.
        assert row.ttft_histogram == histogram_of(ttfts)
        assert row.latency_histogram == histogram_of([t * 10 for t in ttfts])
    by_deployment = UsageDeploymentRollup.objects.get(organization=org, deployment_id=7)
    assert by_deployment.requests == 6  # the policy denial never reached the deployment
    assert (by_deployment.client_errors, by_deployment.server_errors) == (1, 1)
    assert by_deployment.ttft_histogram == histogram_of(ttfts)


@pytest.mark.django_db
def test_rows_from_before_the_histograms_merge_as_zeros_and_rebuilds_keep_them(org):
    hour = NOW.replace(minute=0)
    old = UsageRollup.objects.create(hour=hour, organization=org, model="m-1", requests=3)
    UsageModelRollup.objects.create(hour=hour, organization=org, model="m-1", requests=3)
    assert UsageRollup.objects.get(pk=old.pk).ttft_histogram == []
    usage_records_store([_event(org, hour, ttft_ms=120.0)])
    assert UsageRollup.objects.get(pk=old.pk).ttft_histogram == histogram_of([120.0])
    usage_rollups_rebuild(since=hour - timedelta(days=1), until=hour + timedelta(days=1))
    rebuilt = UsageModelRollup.objects.get(organization=org)
    assert rebuilt.requests == 4
    assert rebuilt.ttft_histogram == histogram_of([120.0])
    daily = UsageModelDayRollup.objects.get(organization=org)
    assert daily.requests == 4
    assert daily.ttft_histogram == histogram_of([120.0])


@pytest.mark.django_db
def test_a_month_read_from_the_daily_rollups_equals_one_read_from_the_hourly_ones(org):
    from apps.usage import selectors

    since, until, bucket = selectors.range_window("30d", now=NOW)
    events = [
        _event(org, NOW - timedelta(days=days, hours=hours), ttft_ms=10.0 * (days + hours), latency_ms=99.0 * days,
               model=f"m-{days % 3}", status_code=500 if hours == 5 else 200, outcome="error" if hours == 5 else "ok")
        for days in range(0, 29, 3) for hours in range(0, 24, 5)
    ]  # fmt: skip
    usage_records_store(events)

    def read(rollups):
        return usage_latency_series(rollups=rollups, since=since, until=until, bucket=bucket, now=NOW)

    daily = read(UsageModelDayRollup.objects.filter(organization=org))
    hourly = read(UsageModelRollup.objects.filter(organization=org))
    assert daily == hourly
    assert daily.totals.requests == len(events)
    assert daily.totals.server_errors == 10
    with pytest.raises(ValueError, match="day buckets"):
        usage_latency_series(rollups=UsageModelDayRollup.objects.all(), since=since, until=until, bucket="hour")


@pytest.mark.django_db
def test_the_latency_series_reads_percentiles_throughput_and_failures_per_bucket(org, other_org):
    from apps.usage import selectors

    since, until, bucket = selectors.range_window("24h", now=NOW)
    busy = NOW.replace(minute=0) - timedelta(hours=3)
    served = [_event(org, busy, ttft_ms=float(t), latency_ms=float(t) * 20) for t in range(20, 220, 10)]
    usage_records_store([*served, _event(org, busy, status_code=503, outcome="error", ttft_ms=None)])
    usage_records_store([_event(other_org, busy, ttft_ms=9_000.0, latency_ms=90_000.0) for _ in range(50)])

    series = usage_latency_series(
        rollups=UsageModelRollup.objects.filter(organization=org), since=since, until=until, bucket=bucket, now=NOW
    )
    index = series.buckets.index(int(busy.timestamp()))
    assert len(series.buckets) == 24
    assert series.totals.requests == 21
    assert series.totals.completed == 20
    assert (series.totals.client_errors, series.totals.server_errors) == (0, 1)
    assert series.server_errors[index] == 1
    # 20 TTFTs from 20 to 210 ms: the true p50 (110 ms) and p95 (200 ms) sit in (100, 200] and (200, 300].
    assert 100 <= series.ttft_p50_ms[index] <= 200
    assert 200 <= series.ttft_p95_ms[index] <= 300
    assert series.totals.ttft_p95_ms == series.ttft_p95_ms[index]  # another organisation's slow requests stay out
    assert series.tokens_per_second[index] == pytest.approx(21 * 50 / 3600, abs=0.01)
    # Hours without requests have no percentile and no throughput: gaps, not zeros.
    assert series.ttft_p50_ms[index - 1] is None
    assert series.tokens_per_second[index - 1] is None
    assert series.client_errors[index - 1] == 0


@pytest.mark.django_db
def test_a_range_without_requests_has_no_figures(org):
    from apps.usage import selectors

    since, until, bucket = selectors.range_window("7d", now=NOW)
    series = usage_latency_series(
        rollups=UsageModelRollup.objects.filter(organization=org), since=since, until=until, bucket=bucket, now=NOW
    )
    assert series.empty
    assert len(series.buckets) == 7 * 24
    assert series.totals.ttft_p50_ms is None
    assert series.totals.latency_p95_ms is None
    assert series.totals.tokens_per_second is None
    assert set(series.ttft_p95_ms) == {None}
