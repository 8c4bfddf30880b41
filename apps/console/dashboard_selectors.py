"""The overview dashboard's reads: usage over time and top models and teams (from the per-model hourly rollups, in one
grouped pass), top keys (from the per-key daily rollups, and the hourly ones for the hours around whole days), live
load of the replicas (from Redis), budget burn (the policies' budgets against the Redis counters the gateway
enforces them with) and which guardrails fired (from the raw usage records of the range, through an index that
carries their guardrails).

Every read takes a queryset already narrowed by `restrict`, aggregates in PostgreSQL and returns plain values: the
number of queries is fixed, whatever the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.db import connection
from django.db.models import Q, QuerySet

from apps.audit.models import UsageKeyRollup, UsageModelRollup, UsageRecord, UsageRollup
from apps.compute.models import Replica
from apps.gateway.catalog import REPLICA_LOAD_KEY
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.policies.effective import _scope as policy_counter_scope  # the counters' names: one definition
from apps.policies.limits import quota_key
from apps.policies.models import Policy
from inferia_runtime.redis_clients import sync_redis

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


def _sql(queryset: QuerySet[Any]) -> tuple[str, list[Any]]:
    # The ORM's own SQL and parameters (passed separately): nothing user-typed is spliced into the wrappers below.
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def _day_start(moment: datetime, *, up: bool = False) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1) if up and day != moment else day


@dataclass(frozen=True)
class UsageOverview:
    """The usage over time of a range and its busiest models and teams."""

    series: UsageSeries
    top_models: list[dict[str, Any]]
    top_teams: list[dict[str, Any]]


def usage_overview(
    *, by_model: QuerySet[UsageModelRollup], since: datetime, until: datetime, bucket: str
) -> UsageOverview:
    """Requests, errors, tokens and spend per bucket (hour or day) between `since` and `until`, and the TOP_N models
    and teams by requests, from the per-model hourly rollups in one grouped pass (one query, GROUPING SETS)."""
    inner_sql, params = _sql(
        by_model.filter(hour__gte=since, hour__lt=until)
        .order_by()
        .values_list(
            "hour", "model", "team_id", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros",
            "latency_ms_total",
        )
    )  # fmt: skip
    bucket_of = "date_trunc('day', r.hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'" if bucket == "day" else "r.hour"
    team_table = Team._meta.db_table
    query = (
        "WITH g AS ("  # noqa: S608 (see _sql)
        "SELECT GROUPING(b) AS no_bucket, GROUPING(model) AS no_model, b, model, team_id, "
        "SUM(requests) AS requests, SUM(errors) AS errors, SUM(prompt_tokens + completion_tokens) AS tokens, "
        "SUM(cost_micros) AS cost, SUM(latency) AS latency "
        f"FROM (SELECT {bucket_of} AS b, r.* FROM ({inner_sql}) AS r(hour, model, team_id, requests, errors, "
        "prompt_tokens, completion_tokens, cost_micros, latency)) AS s "
        "GROUP BY GROUPING SETS ((b), (model), (team_id))) "
        f"SELECT g.*, t.name FROM g LEFT JOIN {team_table} t ON g.no_bucket = 1 AND g.no_model = 1 AND t.id = g.team_id"
    )
    by_bucket: dict[datetime, dict[str, Any]] = {}
    models: list[dict[str, Any]] = []
    teams: list[dict[str, Any]] = []
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        for no_bucket, no_model, moment, model, team_id, requests, errors, tokens, cost, latency, name in cursor:
            row = {"requests": int(requests), "errors": int(errors), "tokens": int(tokens), "cost_micros": int(cost)}
            if not no_bucket:
                by_bucket[moment] = {**row, "latency": float(latency)}
            elif not no_model:
                models.append({"model": model, **row})
            elif team_id is not None:
                teams.append({"team_id": team_id, "team__name": name, **row})
    models.sort(key=lambda row: (-row["requests"], row["model"]))
    teams.sort(key=lambda row: (-row["requests"], row["team_id"]))
    return UsageOverview(
        series=_series_fill(by_bucket, since, until, bucket), top_models=models[:TOP_N], top_teams=teams[:TOP_N]
    )


def _series_fill(
    by_bucket: dict[datetime, dict[str, Any]], since: datetime, until: datetime, bucket: str
) -> UsageSeries:
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
        series.cost_micros.append(int(row.get("cost_micros") or 0))
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


_KEY_SUMS = ("api_key_id", "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros")


def usage_top_keys(
    *,
    rollups: QuerySet[UsageRollup],
    by_key: QuerySet[UsageKeyRollup],
    since: datetime,
    until: datetime,
) -> list[dict[str, Any]]:
    """The TOP_N API keys of the range by requests, with their names and prefixes (one query). Whole days of the
    range are read from the daily per-key rollups, the hours before the first and after the last whole day from the
    hourly ones; the names are looked up for the TOP_N rows only."""
    first_day, last_day = _day_start(since, up=True), _day_start(until)
    if first_day < last_day:
        # One part per time range, each a plain range of its covering index (an OR of ranges would visit the table).
        parts: list[QuerySet[Any]] = [by_key.filter(day__gte=first_day, day__lt=last_day)]
        hours = [(since, first_day), (last_day, until)]
    else:
        parts, hours = [], [(since, until)]
    parts += [rollups.filter(hour__gte=start, hour__lt=end) for start, end in hours if start < end]
    sqls, params = [], []
    for part in parts:
        sql, part_params = _sql(part.filter(api_key__isnull=False).order_by().values_list(*_KEY_SUMS))
        sqls.append(f"({sql})")
        params += part_params
    key_table = ApiKey._meta.db_table
    query = (
        "SELECT top.*, k.name, k.prefix FROM ("  # noqa: S608 (see _sql)
        "SELECT api_key_id, SUM(requests) AS requests, SUM(errors) AS errors, "
        "SUM(prompt_tokens + completion_tokens) AS tokens, SUM(cost_micros) AS cost "
        f"FROM ({' UNION ALL '.join(sqls)}) AS r({', '.join(_KEY_SUMS)}) "
        f"GROUP BY api_key_id ORDER BY requests DESC, api_key_id LIMIT {TOP_N:d}) AS top "
        f"LEFT JOIN {key_table} k ON k.id = top.api_key_id ORDER BY top.requests DESC, top.api_key_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return [
            {
                "api_key_id": key_id,
                "requests": int(requests),
                "errors": int(errors),
                "tokens": int(tokens),
                "cost_micros": int(cost),
                "api_key__name": name,
                "api_key__prefix": prefix,
            }
            for key_id, requests, errors, tokens, cost, name, prefix in cursor.fetchall()
        ]


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
    "UsageOverview",
    "UsageSeries",
    "budget_burn",
    "guardrails_fired",
    "live_load",
    "range_window",
    "usage_overview",
    "usage_top_keys",
]
