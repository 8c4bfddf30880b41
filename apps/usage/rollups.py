"""Usage rollups at five grains, written together by the usage worker in the transaction that inserts the raw
records: hourly per organisation, team, key and model (UsageRollup: reports and cost attribution), hourly per
organisation, team and model (UsageModelRollup), daily per organisation, team and model (UsageModelDayRollup: a
month of latency), hourly per organisation, team and deployment (UsageDeploymentRollup: a deployment page's latency)
and daily per organisation, team and key (UsageKeyRollup), the derived ones small enough for a page to read a month
of them within its time. The timed grains carry histograms of time to first token and end-to-end latency
(apps/usage/histograms.py), merged by addition, so percentiles over any range come from them.

Only records inserted for the first time are added (the caller knows which), so a batch read twice counts once.
`usage_rollups_rebuild` recomputes the per-model (hourly and daily) and per-key grains from the hourly rollups, for a
range: what their migrations did once, and what repairs them after a restore of the hourly table. The per-deployment
grain cannot be derived from the hourly one (which has no deployment); it is only ever added to.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

from apps.usage.histograms import BUCKETS, histogram_add_sql, histogram_bucket, histogram_sum_sql
from apps.usage.models import (
    UsageDeploymentRollup,
    UsageKeyRollup,
    UsageModelDayRollup,
    UsageModelRollup,
    UsageRecord,
    UsageRollup,
)

# The counters every timed grain adds up, then its two histograms (added element by element).
_SUMS = (
    "requests", "errors", "prompt_tokens", "completion_tokens", "cost_micros", "latency_ms_total", "ttft_ms_total",
    "client_errors", "server_errors",
)  # fmt: skip
_KEY_SUMS = _SUMS[:5]  # the daily per-key grain keeps no timings
_HISTOGRAMS = ("ttft_histogram", "latency_histogram")


def _hour(event: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(event["started_at"], tz=UTC).replace(minute=0, second=0, microsecond=0)


def _upsert(
    cursor: Any,
    table: str,
    group_columns: Sequence[str],
    sum_columns: Sequence[str],
    totals: dict[tuple[Any, ...], list[Any]],
    histogram_columns: Sequence[str] = (),
) -> None:
    if not totals:
        return
    columns = [*group_columns, *sum_columns, *histogram_columns]
    placeholders = (
        "(" + ", ".join(["%s"] * (len(group_columns) + len(sum_columns)) + ["%s::int[]"] * len(histogram_columns)) + ")"
    )
    additions = ", ".join(
        [f"{c} = {table}.{c} + EXCLUDED.{c}" for c in sum_columns]
        + [f"{c} = {histogram_add_sql(f'{table}.{c}', f'EXCLUDED.{c}')}" for c in histogram_columns]
    )
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([placeholders] * len(totals))} "  # noqa: S608 (constants)
        f"ON CONFLICT ({', '.join(group_columns)}) DO UPDATE SET {additions}",
        [value for group, total in sorted(totals.items(), key=_sort_key) for value in (*group, *total)],
    )


def _sort_key(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    # Upserts in one order everywhere: two workers adding overlapping batches lock rows in the same order.
    return tuple((value is None, value) for value in item[0])


def _totals(
    events: list[dict[str, Any]], group: Callable[[dict[str, Any]], tuple[Any, ...] | None], *, timed: bool
) -> dict[tuple[Any, ...], list[Any]]:
    """Per group: the counters of _SUMS (the first five only when not `timed`), then, when `timed`, the TTFT and
    latency histograms of the group's completed requests. A group of None leaves the event out."""
    width = len(_SUMS) if timed else len(_KEY_SUMS)

    def empty() -> list[Any]:
        return [0] * width + ([[0] * BUCKETS, [0] * BUCKETS] if timed else [])

    totals: dict[tuple[Any, ...], list[Any]] = defaultdict(empty)
    for event in events:
        key = group(event)
        if key is None:
            continue
        total = totals[key]
        status = event.get("status_code") or 0
        values = (
            1,
            1 if event["outcome"] != UsageRecord.Outcome.OK else 0,
            event["prompt_tokens"],
            event["completion_tokens"],
            event["cost_micros"],
            event["latency_ms"] or 0.0,
            event["ttft_ms"] or 0.0,
            1 if 400 <= status < 500 else 0,
            1 if status >= 500 else 0,
        )
        for index in range(width):
            total[index] += values[index]
        # Percentiles describe the requests that were served: a refusal or a failure answers in its own time.
        if timed and event["outcome"] == UsageRecord.Outcome.OK:
            if event["ttft_ms"] is not None:
                total[width][histogram_bucket(event["ttft_ms"])] += 1
            total[width + 1][histogram_bucket(event["latency_ms"] or 0.0)] += 1
    return totals


def usage_rollups_add(cursor: Any, events: list[dict[str, Any]]) -> None:
    """Add `events` (usage events stored for the first time) to the rollups of every grain, in the caller's
    transaction (five statements, whatever the number of events)."""
    hourly = _totals(
        events, lambda e: (_hour(e), e["organization_id"], e["team_id"], e["api_key_id"], e["model"]), timed=True
    )
    _upsert(
        cursor, UsageRollup._meta.db_table, ("hour", "organization_id", "team_id", "api_key_id", "model"), _SUMS,
        hourly, _HISTOGRAMS,
    )  # fmt: skip
    by_model = _totals(events, lambda e: (_hour(e), e["organization_id"], e["team_id"], e["model"]), timed=True)
    _upsert(
        cursor, UsageModelRollup._meta.db_table, ("hour", "organization_id", "team_id", "model"), _SUMS, by_model,
        _HISTOGRAMS,
    )  # fmt: skip
    by_model_day = _totals(
        events, lambda e: (_hour(e).replace(hour=0), e["organization_id"], e["team_id"], e["model"]), timed=True
    )
    _upsert(
        cursor, UsageModelDayRollup._meta.db_table, ("day", "organization_id", "team_id", "model"), _SUMS,
        by_model_day, _HISTOGRAMS,
    )  # fmt: skip
    by_deployment = _totals(
        events,
        lambda e: (
            None
            if e.get("deployment_id") is None
            else (_hour(e), e["organization_id"], e["team_id"], e["deployment_id"])
        ),
        timed=True,
    )
    _upsert(
        cursor, UsageDeploymentRollup._meta.db_table, ("hour", "organization_id", "team_id", "deployment_id"), _SUMS,
        by_deployment, _HISTOGRAMS,
    )  # fmt: skip
    by_key = _totals(
        events, lambda e: (_hour(e).replace(hour=0), e["organization_id"], e["team_id"], e["api_key_id"]), timed=False
    )
    _upsert(
        cursor, UsageKeyRollup._meta.db_table, ("day", "organization_id", "team_id", "api_key_id"), _KEY_SUMS, by_key
    )


# The derived grains from the hourly rollups of [since, until): `since` and `until` are day starts (UTC), so whole
# days of the daily grain are recomputed. Shared with the migration that created the two tables.
REBUILD_SQL = (
    "DELETE FROM audit_usagemodelrollup WHERE hour >= %(since)s AND hour < %(until)s",
    "INSERT INTO audit_usagemodelrollup (hour, organization_id, team_id, model, requests, errors, prompt_tokens, "  # noqa: S608 (constants)
    "completion_tokens, cost_micros, latency_ms_total, ttft_ms_total, client_errors, server_errors, ttft_histogram, "
    "latency_histogram) "
    "SELECT hour, organization_id, team_id, model, sum(requests), sum(errors), sum(prompt_tokens), "
    "sum(completion_tokens), sum(cost_micros), sum(latency_ms_total), sum(ttft_ms_total), sum(client_errors), "
    f"sum(server_errors), {histogram_sum_sql('ttft_histogram')}, {histogram_sum_sql('latency_histogram')} "
    "FROM audit_usagerollup "
    "WHERE hour >= %(since)s AND hour < %(until)s GROUP BY hour, organization_id, team_id, model",
    "DELETE FROM usage_modeldayrollup WHERE day >= %(since)s AND day < %(until)s",
    "INSERT INTO usage_modeldayrollup (day, organization_id, team_id, model, requests, errors, prompt_tokens, "  # noqa: S608 (constants)
    "completion_tokens, cost_micros, latency_ms_total, ttft_ms_total, client_errors, server_errors, ttft_histogram, "
    "latency_histogram) "
    "SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id, team_id, model, "
    "sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros), sum(latency_ms_total), "
    "sum(ttft_ms_total), sum(client_errors), sum(server_errors), "
    f"{histogram_sum_sql('ttft_histogram')}, {histogram_sum_sql('latency_histogram')} FROM audit_usagerollup "
    "WHERE hour >= %(since)s AND hour < %(until)s GROUP BY 1, organization_id, team_id, model",
    "DELETE FROM audit_usagekeyrollup WHERE day >= %(since)s AND day < %(until)s",
    "INSERT INTO audit_usagekeyrollup (day, organization_id, team_id, api_key_id, requests, errors, prompt_tokens, "
    "completion_tokens, cost_micros) "
    "SELECT date_trunc('day', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', organization_id, team_id, api_key_id, "
    "sum(requests), sum(errors), sum(prompt_tokens), sum(completion_tokens), sum(cost_micros) FROM audit_usagerollup "
    "WHERE hour >= %(since)s AND hour < %(until)s GROUP BY 1, organization_id, team_id, api_key_id",
)
# Held while rebuilding: the usage worker's upserts wait, so none lands between the DELETE and the INSERT.
REBUILD_LOCK_SQL = (
    "LOCK TABLE audit_usagerollup, audit_usagemodelrollup, audit_usagekeyrollup, usage_modeldayrollup "
    "IN SHARE ROW EXCLUSIVE MODE"
)


@transaction.atomic
def usage_rollups_rebuild(*, since: datetime, until: datetime) -> None:
    """Recompute the per-model hourly and per-key daily rollups of the days (UTC) from the one holding `since` up to
    the one holding `until`, from the hourly rollups. Running it again gives the same rows."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be aware datetimes")
    since = since.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    day_of_until = until.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"since": since, "until": day_of_until if day_of_until == until else day_of_until + timedelta(days=1)}
    with connection.cursor() as cursor:
        cursor.execute(REBUILD_LOCK_SQL)
        for statement in REBUILD_SQL:
            cursor.execute(statement, params)


__all__ = ["usage_rollups_add", "usage_rollups_rebuild"]
