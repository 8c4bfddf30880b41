"""What GPUs cost over a period, per organisation, team and deployment, beside what the deployment's tokens earned:
read from the replicas' GPU time (`GpuUsageSpan`) and the hourly per-deployment usage rollups.

Money stays in integer micro-units: a span's cost over a period is its overlap in microseconds times its GPUs times
its price per GPU-hour, divided by the microseconds of an hour (rounded down, once per span).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Q, QuerySet, Sum
from django.utils import timezone

from apps.audit.exports import csv_cell
from apps.usage.models import GpuUsageSpan, UsageDeploymentRollup

MICROS_PER_HOUR = 3_600_000_000
GROUPS = ("organization", "team", "deployment")


@dataclass(frozen=True)
class GpuCostRow:
    """GPU time and cost of one organisation, team or deployment over a period, and its tokens and their cost.

    A deployment's tokens are every request it served (whoever sent them); its team is the one its GPUs are charged
    to. Rows of an organisation or a team sum their deployments'."""

    organization_id: int | None
    team_id: int | None
    deployment_id: int | None
    deployment_name: str
    gpu_seconds: int
    gpu_cost_micros: int
    tokens: int
    token_cost_micros: int

    @property
    def gpu_hours(self) -> float:
        """GPU-hours, for display (the exact figure is `gpu_seconds`)."""
        return self.gpu_seconds / 3600

    @property
    def gpu_cost_per_mtok_micros(self) -> int | None:
        """GPU cost per million tokens served (None without tokens): what serving a million tokens cost in GPUs."""
        return self.gpu_cost_micros * 1_000_000 // self.tokens if self.tokens else None


def span_cost_micros(span: GpuUsageSpan, *, since: datetime, until: datetime) -> tuple[int, int]:
    """A span's GPU microseconds and cost in micro-units within [since, until) (`until` no later than now for a
    span still open)."""
    start = max(span.started_at, since)
    end = min(span.ended_at or until, until)
    if end <= start:
        return 0, 0
    gpu_micros = (end - start) // timedelta(microseconds=1) * span.gpus
    return gpu_micros, gpu_micros * span.cost_per_gpu_hour_micros // MICROS_PER_HOUR


def gpu_costs(
    *,
    spans: QuerySet[GpuUsageSpan],
    rollups: QuerySet[UsageDeploymentRollup],
    since: datetime,
    until: datetime,
    group_by: str = "deployment",
    now: datetime | None = None,
) -> list[GpuCostRow]:
    """GPU time and cost in [since, until) per `group_by` ("organization", "team" or "deployment"), from `spans`
    and `rollups` already narrowed by `.restrict()` (and any filter), most expensive first. Tokens come from the
    hourly rollups of the hours that start within the period. Two queries (one when no GPU served)."""
    until = min(until, now or timezone.now())
    overlapping = (
        spans.filter(started_at__lt=until)
        .filter(Q(ended_at__isnull=True) | Q(ended_at__gt=since))
        .select_related("deployment")
        .only(
            "organization_id",
            "team_id",
            "deployment_id",
            "deployment__served_model_name",
            "gpus",
            "cost_per_gpu_hour_micros",
            "started_at",
            "ended_at",
        )
    )
    by_deployment: dict[tuple[Any, ...], GpuCostRow] = {}
    for span in overlapping:
        gpu_micros, cost = span_cost_micros(span, since=since, until=until)
        key = (span.organization_id, span.team_id, span.deployment_id)
        row = by_deployment.get(key) or GpuCostRow(
            organization_id=span.organization_id,
            team_id=span.team_id,
            deployment_id=span.deployment_id,
            deployment_name=span.deployment.served_model_name if span.deployment else "",
            gpu_seconds=0,
            gpu_cost_micros=0,
            tokens=0,
            token_cost_micros=0,
        )
        # Seconds are summed as microseconds first, so that many short spans lose nothing to rounding.
        by_deployment[key] = replace(
            row, gpu_seconds=row.gpu_seconds + gpu_micros, gpu_cost_micros=row.gpu_cost_micros + cost
        )
    deployments = {key[2] for key in by_deployment} - {None}
    tokens = _tokens_by_deployment(rollups, since=since, until=until, deployments=deployments) if deployments else {}
    rows = [
        replace(
            row,
            gpu_seconds=row.gpu_seconds // 1_000_000,
            tokens=tokens.get(row.deployment_id, (0, 0))[0],
            token_cost_micros=tokens.get(row.deployment_id, (0, 0))[1],
        )
        for row in by_deployment.values()
    ]
    return sorted(_grouped(rows, group_by), key=lambda row: (-row.gpu_cost_micros, row.deployment_name))


def _tokens_by_deployment(
    rollups: QuerySet[UsageDeploymentRollup], *, since: datetime, until: datetime, deployments: set[Any]
) -> dict[Any, tuple[int, int]]:
    totals = (
        rollups.filter(hour__gte=since, hour__lt=until, deployment_id__in=deployments)
        .values("deployment_id")
        .annotate(tokens=Sum(F("prompt_tokens") + F("completion_tokens")), cost=Sum("cost_micros"))
        .order_by()
    )
    return {row["deployment_id"]: (int(row["tokens"] or 0), int(row["cost"] or 0)) for row in totals}


def _grouped(rows: list[GpuCostRow], group_by: str) -> Iterable[GpuCostRow]:
    if group_by == "deployment":
        return rows
    groups: dict[tuple[Any, ...], GpuCostRow] = {}
    for row in rows:
        key = (row.organization_id, row.team_id if group_by == "team" else None)
        total = groups.get(key)
        if total is None:
            groups[key] = replace(row, team_id=key[1], deployment_id=None, deployment_name="")
            continue
        groups[key] = replace(
            total,
            gpu_seconds=total.gpu_seconds + row.gpu_seconds,
            gpu_cost_micros=total.gpu_cost_micros + row.gpu_cost_micros,
            tokens=total.tokens + row.tokens,
            token_cost_micros=total.token_cost_micros + row.token_cost_micros,
        )
    return groups.values()


GPU_COST_COLUMNS = (
    "organization_id",
    "team_id",
    "deployment_id",
    "deployment_name",
    "gpu_seconds",
    "gpu_cost_micros",
    "tokens",
    "token_cost_micros",
    "gpu_cost_per_mtok_micros",
)


def gpu_costs_csv(rows: list[GpuCostRow]) -> Iterator[str]:
    """The rows as CSV, a header first; text a spreadsheet would run as a formula is neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(GPU_COST_COLUMNS)
    for row in rows:
        writer.writerow([csv_cell(getattr(row, column)) for column in GPU_COST_COLUMNS])
    yield buffer.getvalue()
