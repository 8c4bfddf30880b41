"""Reading latency and throughput from the hourly rollups: p50 and p95 time to first token and end-to-end latency,
output tokens per second, and client (4xx) and server or upstream (5xx) failures, per bucket of a range and over the
whole range. The percentiles come from the rollups' histograms added up in PostgreSQL (apps/usage/histograms.py),
never from the raw records, so a month costs what a month of rollup rows costs.

The read takes a queryset of per-model (dashboard: hourly, or daily for day buckets) or per-deployment (a deployment's
page) rollups, already narrowed by `.restrict()` and to what the page shows: one query, whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from apps.usage.histograms import BUCKETS, histogram_percentile
from apps.usage.models import UsageDeploymentRollup, UsageModelDayRollup, UsageModelRollup

LatencyRollups = QuerySet[UsageModelRollup] | QuerySet[UsageModelDayRollup] | QuerySet[UsageDeploymentRollup]


@dataclass(frozen=True)
class LatencyTotals:
    """A range's latency and throughput; every figure None when the range holds no request it could describe."""

    requests: int = 0
    completed: int = 0  # requests counted in the latency histogram (those served)
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    tokens_per_second: float | None = None  # output (completion) tokens per second of the range
    client_errors: int = 0
    server_errors: int = 0


@dataclass(frozen=True)
class LatencySeries:
    """Per bucket (hour or day) of a range, oldest first: percentiles (None where nothing was served), output tokens
    per second (None where no request came), and 4xx and 5xx answers; plus the range's totals."""

    buckets: list[int]  # bucket starts, POSIX seconds
    ttft_p50_ms: list[float | None] = field(default_factory=list)
    ttft_p95_ms: list[float | None] = field(default_factory=list)
    latency_p50_ms: list[float | None] = field(default_factory=list)
    latency_p95_ms: list[float | None] = field(default_factory=list)
    tokens_per_second: list[float | None] = field(default_factory=list)
    client_errors: list[int] = field(default_factory=list)
    server_errors: list[int] = field(default_factory=list)
    totals: LatencyTotals = field(default_factory=LatencyTotals)

    @property
    def empty(self) -> bool:
        return self.totals.requests == 0


def _sum_columns(column: str) -> str:
    return ", ".join(f"SUM({column}[{index}])" for index in range(1, BUCKETS + 1))


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _describe(
    requests: int, completion_tokens: int, ttft: Sequence[int], latency: Sequence[int], seconds: float
) -> dict[str, Any]:
    return {
        "requests": requests,
        "completed": sum(latency),
        "ttft_p50_ms": _rounded(histogram_percentile(ttft, 0.5)),
        "ttft_p95_ms": _rounded(histogram_percentile(ttft, 0.95)),
        "latency_p50_ms": _rounded(histogram_percentile(latency, 0.5)),
        "latency_p95_ms": _rounded(histogram_percentile(latency, 0.95)),
        "tokens_per_second": completion_tokens / seconds if requests and seconds > 0 else None,
    }


def usage_latency_series(
    *,
    rollups: LatencyRollups,
    since: datetime,
    until: datetime,
    bucket: str,
    now: datetime | None = None,
) -> LatencySeries:
    """Latency percentiles, output tokens per second and 4xx/5xx answers per bucket ("hour" or "day") of
    [since, until), and over the whole range, from hourly rollups with histograms (one query, GROUP BY ROLLUP).
    Throughput divides by the time that has passed: the current bucket counts up to `now` only. Daily rollups
    (UsageModelDayRollup, for day buckets) are read by their day, the others by their hour."""
    now = now or datetime.now(UTC)
    daily = rollups.model is UsageModelDayRollup
    if daily and bucket != "day":
        raise ValueError("daily rollups only fill day buckets")
    time_field = "day" if daily else "hour"
    inner = (
        rollups.filter(**{f"{time_field}__gte": since, f"{time_field}__lt": until})
        .order_by()
        .values_list(
            time_field, "requests", "completion_tokens", "client_errors", "server_errors", "ttft_histogram",
            "latency_histogram",
        )
    )  # fmt: skip
    inner_sql, params = inner.query.sql_with_params()
    bucket_of = "date_trunc('day', r.hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" if bucket == "day" else "r.hour"
    if daily:
        bucket_of = "r.hour"  # already a day start
    # The inner SQL is the ORM's with its parameters passed separately; the rest is constants.
    query = (
        f"SELECT GROUPING(b), b, SUM(requests), SUM(completion_tokens), SUM(client_errors), SUM(server_errors), "  # noqa: S608
        f"{_sum_columns('ttft')}, {_sum_columns('latency')} "
        f"FROM (SELECT {bucket_of} AS b, r.* FROM ({inner_sql}) AS r(hour, requests, completion_tokens, client_errors, "
        "server_errors, ttft, latency)) AS s GROUP BY ROLLUP (b)"
    )
    rows: dict[datetime | None, tuple[Any, ...]] = {}
    with connection.cursor() as cursor:
        cursor.execute(query, list(params))
        for row in cursor.fetchall():
            rows[None if row[0] else row[1]] = tuple(int(value or 0) for value in row[2:])

    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    series = LatencySeries(buckets=[])
    moment = since
    while moment < until:
        values = rows.get(moment)
        series.buckets.append(int(moment.timestamp()))
        seconds = (min(moment + step, max(now, moment)) - moment).total_seconds()
        if values is None:
            described = _describe(0, 0, (), (), seconds)
            client = server = 0
        else:
            requests, completion, client, server = values[:4]
            described = _describe(requests, completion, values[4 : 4 + BUCKETS], values[4 + BUCKETS :], seconds)
        series.ttft_p50_ms.append(described["ttft_p50_ms"])
        series.ttft_p95_ms.append(described["ttft_p95_ms"])
        series.latency_p50_ms.append(described["latency_p50_ms"])
        series.latency_p95_ms.append(described["latency_p95_ms"])
        series.tokens_per_second.append(described["tokens_per_second"])
        series.client_errors.append(client)
        series.server_errors.append(server)
        moment += step

    total = rows.get(None)
    if total is not None and total[0]:
        elapsed = (min(until, max(now, since)) - since).total_seconds()
        described = _describe(total[0], total[1], total[4 : 4 + BUCKETS], total[4 + BUCKETS :], elapsed)
        totals = LatencyTotals(**described, client_errors=total[2], server_errors=total[3])
        series = replace(series, totals=totals)
    return series


__all__ = ["LatencySeries", "LatencyTotals", "usage_latency_series"]
