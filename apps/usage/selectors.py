"""Reading usage: the sums the REST API and reports ask for, the dashboard's usage over time and busiest models, keys
and teams (from the rollups), the guardrails that fired (from the raw records, through an index that carries their
guardrails), and the CSV export of records.

Every read takes a queryset already narrowed by `.restrict()`, aggregates in PostgreSQL and returns plain values: the
number of queries is fixed, whatever the number of rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from apps.audit.exports import csv_cell, export_rows
from apps.keys.models import ApiKey
from apps.orgs.models import Team
from apps.usage.events import USAGE_EXPORT_COLUMNS
from apps.usage.models import RequestCapture, UsageKeyRollup, UsageModelRollup, UsageRecord, UsageRollup
from inferia_runtime.money import money_currency, money_plain

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


USAGE_GROUPS = {"day": "day", "model": "model", "key": "api_key"}


def usage_summary(
    *,
    records: QuerySet[Any],
    group_by: Iterable[str],
    since: datetime | None = None,
    until: datetime | None = None,
    organization_id: int | None = None,
    model: str = "",
    api_key_id: int | None = None,
    team_id: int | None = None,
) -> list[dict[str, Any]]:
    """Usage summed per day (UTC), model and/or key, newest day first, from an already-restricted queryset of
    hourly rollups (which outlive the raw records' retention)."""
    if since:
        records = records.filter(hour__gte=since)
    if until:
        records = records.filter(hour__lt=until)
    if organization_id:
        records = records.filter(organization_id=organization_id)
    if model:
        records = records.filter(model=model)
    if api_key_id:
        records = records.filter(api_key_id=api_key_id)
    if team_id:
        records = records.filter(team_id=team_id)
    columns = [USAGE_GROUPS[name] for name in USAGE_GROUPS if name in set(group_by)]
    rows = (
        records.order_by()
        .annotate(day=TruncDate("hour"))
        .values(*columns)
        .annotate(
            requests=Sum("requests"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost_micros=Sum("cost_micros"),
            errors=Sum("errors"),
        )
        .order_by(*[f"-{c}" if c == "day" else c for c in columns])
    )
    return list(rows)


@dataclass(frozen=True)
class UsageRequestDetail:
    """One request as its detail page shows it: the record (key, team, deployment and replica selected) and its
    captured prompt and answer, when its organisation kept them and they are still within retention."""

    record: UsageRecord
    capture: RequestCapture | None


def usage_request_detail(
    *, records: QuerySet[UsageRecord], captures: QuerySet[RequestCapture], request_id: str
) -> UsageRequestDetail | None:
    """The request `request_id` (ours) among `records`, with its capture among `captures` (both `.restrict()`-ed);
    None when it is not there. Two queries."""
    record = (
        records.filter(request_id=request_id)
        .select_related("api_key", "team", "organization", "deployment", "replica")
        .first()
    )
    if record is None:
        return None
    capture = captures.filter(usage_record_id=record.pk, expires_at__gt=timezone.now()).first()
    return UsageRequestDetail(record=record, capture=capture)


def usage_records_csv(*, records: QuerySet[UsageRecord]) -> Iterator[str]:
    """The records as CSV (the usage event's exported fields), newest first, one chunk per batch of rows (see
    `apps.audit.exports`); text that a spreadsheet would run as a formula is neutralised (`csv_cell`). The cost is
    an exact decimal amount in the currency under `cost_<currency>` (`cost_usd`: "0.0015"), not micro-units."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    cost_at = USAGE_EXPORT_COLUMNS.index("cost_micros")
    header = list(USAGE_EXPORT_COLUMNS)
    header[cost_at] = f"cost_{money_currency().lower()}"
    writer.writerow(header)
    for batch in export_rows(records.order_by("-started_at", "-pk").values_list(*USAGE_EXPORT_COLUMNS)):
        for row in batch:
            cells = [value.isoformat() if isinstance(value, datetime) else csv_cell(value) for value in row]
            cells[cost_at] = money_plain(row[cost_at] or 0)
            writer.writerow(cells)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


__all__ = [
    "DEFAULT_RANGE",
    "RANGES",
    "USAGE_GROUPS",
    "UsageOverview",
    "UsageRequestDetail",
    "UsageSeries",
    "guardrails_fired",
    "range_window",
    "usage_overview",
    "usage_records_csv",
    "usage_request_detail",
    "usage_summary",
    "usage_top_keys",
]
