"""Reading the engines' load over time (apps/compute/load_history.py): running and waiting requests and KV-cache use
per step of a range, for one deployment or all those a page shows. Callers pass deployments already narrowed by
`.restrict()`; one query, whatever the number of samples."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from apps.compute.load_history import HOUR
from apps.compute.models import DeploymentLoadSample, ModelDeployment

# The chart step per range length: the fine samples' own step for a day, hourly samples for longer ranges (a few
# hundred points at most).
LOAD_STEPS: tuple[tuple[timedelta, int], ...] = (
    (timedelta(days=1), 0),  # 0: the fine sampling step itself
    (timedelta(days=7), 3600),
    (timedelta(days=31), 6 * 3600),
)


@dataclass(frozen=True)
class LoadSeries:
    """Per step, oldest first: the highest running and waiting requests (summed over the deployments' READY
    replicas) and the highest KV-cache use in percent; None where no sample was recorded."""

    step_seconds: int
    buckets: list[int] = field(default_factory=list)  # step starts, POSIX seconds
    running: list[float | None] = field(default_factory=list)
    waiting: list[float | None] = field(default_factory=list)
    kv_cache_percent: list[float | None] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return all(value is None for value in self.running)


def load_steps_for(since: datetime, until: datetime, fine_seconds: int) -> tuple[int, int]:
    """(the samples' resolution to read, the chart's step), both in seconds, for a range: fine samples for a day or
    less, hourly ones beyond."""
    span = until - since
    step = next((step for longest, step in LOAD_STEPS if span <= longest), LOAD_STEPS[-1][1])
    if step == 0:
        return fine_seconds, fine_seconds
    return HOUR, max(step, HOUR)


def deployment_load_series(
    *, deployments: QuerySet[ModelDeployment], since: datetime, until: datetime, fine_seconds: int
) -> LoadSeries:
    """The load of `deployments` (summed at each sample, then the highest per chart step) over [since, until), from
    the samples of the resolution that suits the range (`load_steps_for`)."""
    sample_seconds, step_seconds = load_steps_for(since, until, fine_seconds)
    ids_sql, ids_params = deployments.order_by().values("pk").query.sql_with_params()
    table = DeploymentLoadSample._meta.db_table
    origin = int(since.timestamp())
    # The inner SQL is the ORM's with its parameters passed separately; the rest is constants and numbers.
    query = (
        f"SELECT floor((extract(epoch FROM at) - %s) / %s)::bigint AS n, max(running), max(waiting), max(kv) "  # noqa: S608
        f"FROM (SELECT at, sum(running) AS running, sum(waiting) AS waiting, max(kv_cache) AS kv FROM {table} "
        f"WHERE deployment_id IN ({ids_sql}) AND step = %s AND at >= %s AND at < %s GROUP BY at) AS s GROUP BY 1"
    )
    by_step: dict[int, tuple[Any, ...]] = {}
    with connection.cursor() as cursor:
        cursor.execute(query, [origin, step_seconds, *ids_params, sample_seconds, since, until])
        for n, running, waiting, kv in cursor.fetchall():
            by_step[int(n)] = (running, waiting, kv)
    series = LoadSeries(step_seconds=step_seconds)
    steps = int((until - since).total_seconds()) // step_seconds
    for n in range(steps):
        series.buckets.append(origin + n * step_seconds)
        running, waiting, kv = by_step.get(n, (None, None, None))
        series.running.append(None if running is None else round(float(running), 2))
        series.waiting.append(None if waiting is None else round(float(waiting), 2))
        series.kv_cache_percent.append(None if kv is None else round(100 * float(kv), 1))
    return series


__all__ = ["LOAD_STEPS", "LoadSeries", "deployment_load_series", "load_steps_for"]
