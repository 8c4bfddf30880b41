"""The engines' load over time: after each health check, one upsert records, per deployment, the running and waiting
requests summed over its READY replicas and their highest KV-cache use into the samples of the current step
(INFERIA_LOAD_SAMPLE_SECONDS) and of the current hour (DeploymentLoadSample), keeping the highest value seen in each;
fine samples older than INFERIA_LOAD_FINE_HISTORY_DAYS and hourly ones older than INFERIA_LOAD_HISTORY_DAYS are
pruned. The reads are in `apps/compute/load_selectors.py`.

The values come from `Replica.last_metrics`, which both the poll (`/metrics`) and a node's pushed heartbeat update, so
one statement covers every replica however its load arrived; metrics older than LOAD_FRESH_SECONDS are left out (a
replica that stopped answering has no load to report, not its last one).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.compute.models import DeploymentLoadSample, Replica

LOAD_FRESH_SECONDS = 60.0


HOUR = 3600


def load_sample_step_start(moment: datetime, step: int | None = None) -> datetime:
    """The start of the sample of `step` seconds (the fine step by default) holding `moment`, aligned on the epoch."""
    step = step or settings.INFERIA_LOAD_SAMPLE_SECONDS
    return datetime.fromtimestamp(int(moment.timestamp()) // step * step, tz=UTC)


def load_sample_steps() -> tuple[int, ...]:
    """The resolutions kept: the fine step and the hour (one, when the fine step is the hour)."""
    fine = settings.INFERIA_LOAD_SAMPLE_SECONDS
    return (fine,) if fine >= HOUR else (fine, HOUR)


def deployment_load_record(*, now: datetime | None = None) -> int:
    """Fold the READY replicas' last reported load into their deployments' samples of the current step and hour (one
    statement, whatever the number of deployments). Returns how many samples were written or raised."""
    now = now or timezone.now()
    table, replicas = DeploymentLoadSample._meta.db_table, Replica._meta.db_table
    steps = load_sample_steps()
    samples = ", ".join(["(%s::int, %s::timestamptz)"] * len(steps))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (deployment_id, step, at, running, waiting, kv_cache, replicas) "  # noqa: S608 (constants)
            "SELECT r.deployment_id, s.step, s.at, sum((r.last_metrics->>'running')::float), "
            "sum((r.last_metrics->>'waiting')::float), max((r.last_metrics->>'kv_cache')::float), count(*) "
            f"FROM {replicas} r CROSS JOIN (VALUES {samples}) AS s(step, at) "
            "WHERE r.state = %s AND jsonb_typeof(r.last_metrics->'checked_at') = 'number' "
            "AND (r.last_metrics->>'checked_at')::float >= %s "
            "GROUP BY r.deployment_id, s.step, s.at ORDER BY r.deployment_id, s.step "
            "ON CONFLICT (deployment_id, step, at) DO UPDATE SET "
            f"running = GREATEST({table}.running, EXCLUDED.running), "
            f"waiting = GREATEST({table}.waiting, EXCLUDED.waiting), "
            f"kv_cache = GREATEST({table}.kv_cache, EXCLUDED.kv_cache), "
            f"replicas = GREATEST({table}.replicas, EXCLUDED.replicas)",
            [
                *(value for step in steps for value in (step, load_sample_step_start(now, step))),
                Replica.State.READY,
                now.timestamp() - LOAD_FRESH_SECONDS,
            ],
        )
        return int(cursor.rowcount)


def deployment_load_prune(*, batch: int = 10_000) -> int:
    """Delete fine samples past INFERIA_LOAD_FINE_HISTORY_DAYS and hourly ones past INFERIA_LOAD_HISTORY_DAYS, in
    batches. Returns how many were deleted."""
    now = timezone.now()
    deleted = 0
    for step in load_sample_steps():
        days = settings.INFERIA_LOAD_HISTORY_DAYS if step == HOUR else settings.INFERIA_LOAD_FINE_HISTORY_DAYS
        old = DeploymentLoadSample.objects.filter(step=step, at__lt=now - timedelta(days=days))
        while ids := list(old.values_list("id", flat=True)[:batch]):
            deleted += DeploymentLoadSample.objects.filter(id__in=ids).delete()[0]
    return deleted


__all__ = [
    "HOUR",
    "LOAD_FRESH_SECONDS",
    "deployment_load_prune",
    "deployment_load_record",
    "load_sample_step_start",
    "load_sample_steps",
]
