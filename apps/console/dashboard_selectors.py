"""The overview dashboard's reads: usage over time and top models, keys and teams (from the hourly rollups), live
load of the replicas (from Redis), budget burn (the policies' budgets against the Redis counters the gateway
enforces them with) and which guardrails fired (from the raw usage records of the range).

Every read takes a queryset already narrowed by `restrict`, aggregates in PostgreSQL and returns plain values: the
number of queries is fixed, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.db import connection
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDay, TruncHour

from apps.audit.models import UsageRecord, UsageRollup
from apps.compute.models import Replica
from apps.gateway.catalog import REPLICA_LOAD_KEY
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.policies.effective import _scope as policy_counter_scope  # the counters' names: one definition
from apps.policies.limits import quota_key
from apps.policies.models import Policy
from inferia_site.redis_clients import sync_redis

RANGES: dict[str, tuple[timedelta, str]] = {
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
    "30d": (timedelta(days=30), "day"),
}
DEFAULT_RANGE = "24h"
TOP_N = 5


@dataclass(frozen=True)
class UsageSeries:
    """Totals per bucket (hour or day) of a range, gaps filled with zeros, oldest first; plus the range's totals."""

    buckets: list[int]  # bucket starts, POSIX seconds (what the chart's x axis takes)
    requests: list[int]
    errors: list[int]
    tokens: list[int]
    cost_micros: list[int]
    totals: dict[str, float] = field(default_factory=dict)


def range_window(range_name: str, now: datetime | None = None) -> tuple[datetime, datetime, str]:
    """(since, until, bucket) of a range name; unknown names read as the default range."""
    span, bucket = RANGES.get(range_name, RANGES[DEFAULT_RANGE])
    now = now or datetime.now(UTC)
    until = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if bucket == "day":
        until = until.replace(hour=0) + timedelta(days=1)
    return until - span, until, bucket


def usage_series(*, rollups: QuerySet[UsageRollup], since: datetime, until: datetime, bucket: str) -> UsageSeries:
    """Requests, errors, tokens and spend per bucket of `rollups` between `since` and `until` (one query)."""
    trunc = TruncDay("hour", tzinfo=UTC) if bucket == "day" else TruncHour("hour", tzinfo=UTC)
    rows = (
        rollups.filter(hour__gte=since, hour__lt=until)
        .order_by()
        .annotate(bucket=trunc)
        .values("bucket")
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            cost=Sum("cost_micros"),
            latency=Sum("latency_ms_total"),
        )
    )
    by_bucket = {row["bucket"]: row for row in rows}
    step = timedelta(days=1) if bucket == "day" else timedelta(hours=1)
    series = UsageSeries([], [], [], [], [])
    latency_total = 0.0
    moment = since
    while moment < until:
        row = by_bucket.get(moment, {})
        series.buckets.append(int(moment.timestamp()))
        series.requests.append(int(row.get("requests") or 0))
        series.errors.append(int(row.get("errors") or 0))
        series.tokens.append(int(row.get("tokens") or 0))
        series.cost_micros.append(int(row.get("cost") or 0))
        latency_total += float(row.get("latency") or 0)
        moment += step
    requests = sum(series.requests)
    errors = sum(series.errors)
    series.totals.update(
        requests=requests,
        errors=errors,
        tokens=sum(series.tokens),
        cost_micros=sum(series.cost_micros),
        error_rate=(errors / requests) if requests else 0.0,
        latency_ms_avg=(latency_total / requests) if requests else 0.0,
    )
    return series


def _top(
    rollups: QuerySet[UsageRollup],
    since: datetime,
    until: datetime,
    columns: list[str],
    names: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The TOP_N groups of `columns` by requests. `names` are looked up per group after the ranking (correlated
    subqueries PostgreSQL evaluates for the TOP_N rows only): joining the named table before grouping would make
    the planner walk every rollup row of the range through the join."""
    rows = (
        rollups.filter(hour__gte=since, hour__lt=until)
        .order_by()
        .values(*columns)
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            cost_micros=Sum("cost_micros"),
        )
    )
    if names:
        rows = rows.annotate(**names)
    return list(rows.order_by("-requests", *columns)[:TOP_N])


def usage_top_models(*, rollups: QuerySet[UsageRollup], since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The busiest models of the range, by requests (one query)."""
    return _top(rollups, since, until, ["model"])


def usage_top_keys(*, rollups: QuerySet[UsageRollup], since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The busiest API keys of the range, with their names and prefixes (one query; the names are subqueries run for
    the TOP_N rows only, no per-row lookups from Python)."""
    key = ApiKey.objects.filter(pk=OuterRef("api_key_id"))
    return _top(
        rollups.filter(api_key__isnull=False),
        since,
        until,
        ["api_key_id"],
        {"api_key__name": Subquery(key.values("name")[:1]), "api_key__prefix": Subquery(key.values("prefix")[:1])},
    )


def usage_top_teams(*, rollups: QuerySet[UsageRollup], since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The busiest teams of the range, with their names (one query)."""
    team = Team.objects.filter(pk=OuterRef("team_id"))
    return _top(
        rollups.filter(team__isnull=False), since, until, ["team_id"], {"team__name": Subquery(team.values("name")[:1])}
    )


@dataclass(frozen=True)
class LiveLoad:
    """What the engines of the visible READY replicas report right now (scraped by the health checker into Redis):
    requests running and waiting, and the highest KV-cache use. `available` is False when Redis could not answer."""

    replicas: int
    running: float
    waiting: float
    kv_cache_max: float
    available: bool = True


def live_load(*, replicas: QuerySet[Replica]) -> LiveLoad:
    """Sum the live load of `replicas` that are READY (one query, one Redis round trip)."""
    ids = list(replicas.filter(state=Replica.State.READY).order_by().values_list("pk", flat=True)[:1000])
    if not ids:
        return LiveLoad(replicas=0, running=0, waiting=0, kv_cache_max=0)
    try:
        pipe = sync_redis().pipeline(transaction=False)
        for replica_id in ids:
            pipe.hmget(REPLICA_LOAD_KEY.format(replica_id=replica_id), "running", "waiting", "kv_cache")
        answers = pipe.execute()
    except redis.RedisError:
        return LiveLoad(replicas=len(ids), running=0, waiting=0, kv_cache_max=0, available=False)
    running = waiting = kv_max = 0.0
    for values in answers:
        run, wait, kv = (float(v) if v is not None else 0.0 for v in values)
        running += run
        waiting += wait
        kv_max = max(kv_max, kv)
    return LiveLoad(replicas=len(ids), running=running, waiting=waiting, kv_cache_max=kv_max)


@dataclass(frozen=True)
class BudgetBurn:
    """One budget of one policy, against what was spent (settled) and is held (by requests in flight) this period."""

    policy_id: int
    target: str
    period: str  # "day" or "month"
    budget_micros: int
    used_micros: int
    held_micros: int

    @property
    def percent(self) -> float:
        if not self.budget_micros:
            return 0.0
        return min(100.0, 100.0 * (self.used_micros + self.held_micros) / self.budget_micros)

    @property
    def state(self) -> str:
        """ "ok", "warn" (past 80%) or "over" (spent), for the bar's colour."""
        return "over" if self.percent >= 100 else "warn" if self.percent >= 80 else "ok"


def _policy_target(policy: Policy) -> str:
    if policy.api_key_id is not None:
        return f"Key {policy.api_key.name} ({policy.api_key.prefix}…)"
    if policy.team_id is not None:
        return f"Team {policy.team.name}"
    return f"Organisation {policy.organization.name}"


def budget_burn(*, policies: QuerySet[Policy], now: datetime | None = None) -> tuple[list[BudgetBurn], bool]:
    """Every daily and monthly budget of the enabled `policies`, with the current period's spend from the counters
    the gateway enforces budgets with (one query, one Redis round trip). Also whether Redis answered."""
    now = now or datetime.now(UTC)
    rows = list(
        policies.filter(enabled=True)
        .filter(Q(budget_per_day_micros__isnull=False) | Q(budget_per_month_micros__isnull=False))
        .select_related("organization", "team", "api_key")
        .order_by("organization_id", "team_id", "api_key_id")[:50]
    )
    day_id, month_id = now.strftime("%Y%m%d"), now.strftime("%Y%m")
    wanted: list[tuple[Policy, str, int, str]] = []
    for policy in rows:
        scope = policy_counter_scope(policy)
        if policy.budget_per_day_micros is not None:
            wanted.append((policy, "day", policy.budget_per_day_micros, quota_key(scope, "d", day_id)))
        if policy.budget_per_month_micros is not None:
            wanted.append((policy, "month", policy.budget_per_month_micros, quota_key(scope, "m", month_id)))
    if not wanted:
        return [], True
    available = True
    try:
        pipe = sync_redis().pipeline(transaction=False)
        for *_, key in wanted:
            pipe.hmget(key, "usd_used", "usd_held")
        answers = pipe.execute()
    except redis.RedisError:
        answers, available = [[None, None]] * len(wanted), False
    burns = [
        BudgetBurn(
            policy_id=policy.pk,
            target=_policy_target(policy),
            period=period,
            budget_micros=budget,
            used_micros=int(used or 0),
            held_micros=max(0, int(held or 0)),
        )
        for (policy, period, budget, _), (used, held) in zip(wanted, answers, strict=True)
    ]
    return burns, available


def guardrails_fired(*, records: QuerySet[UsageRecord], since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Which guardrails fired in the range and what they did (block, redact, flag), with how often (one query,
    aggregated in PostgreSQL over the records' `guardrails` lists)."""
    inner = (
        records.filter(started_at__gte=since, started_at__lt=until)
        .exclude(guardrails=[])
        .order_by()
        .values("guardrails")
    )
    sql, params = inner.query.sql_with_params()
    # The inner SQL is the ORM's, with its parameters passed separately: nothing user-typed is spliced in.
    query = (
        "SELECT g->>'category' AS category, g->>'action' AS action, "  # noqa: S608
        "SUM(COALESCE((g->>'count')::bigint, 1)) AS fired, COUNT(*) AS requests "
        f"FROM ({sql}) AS r(guardrails), jsonb_array_elements(r.guardrails) AS g "
        "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 20"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return [
            {"category": category or "?", "action": action or "?", "fired": int(fired), "requests": int(requests)}
            for category, action, fired, requests in cursor.fetchall()
        ]


__all__ = [
    "DEFAULT_RANGE",
    "RANGES",
    "BudgetBurn",
    "LiveLoad",
    "UsageSeries",
    "budget_burn",
    "guardrails_fired",
    "live_load",
    "range_window",
    "usage_series",
    "usage_top_keys",
    "usage_top_models",
    "usage_top_teams",
]
