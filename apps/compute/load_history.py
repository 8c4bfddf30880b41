"""The engines' load over time: after each health check, one upsert records, per deployment, the running and waiting
requests summed over its READY replicas and their highest KV-cache use into the sample of the current step
(DeploymentLoadSample, INFERIA_LOAD_SAMPLE_SECONDS long), keeping the highest value seen in the step; samples older
than INFERIA_LOAD_HISTORY_DAYS are pruned. The reads are in `apps/compute/load_selectors.py`.

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


def load_sample_step_start(moment: datetime) -> datetime:
    """The start of the sampling step holding `moment` (steps are aligned on the epoch, UTC)."""
    step = settings.INFERIA_LOAD_SAMPLE_SECONDS
    seconds = int(moment.timestamp()) // step * step
    return datetime.fromtimestamp(seconds, tz=UTC)


def deployment_load_record(*, now: datetime | None = None) -> int:
    """Fold the READY replicas' last reported load into their deployments' sample of the current step (one statement,
    whatever the number of deployments). Returns how many deployments had load to record."""
    now = now or timezone.now()
    table, replicas = DeploymentLoadSample._meta.db_table, Replica._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (deployment_id, at, running, waiting, kv_cache, replicas) "  # noqa: S608 (constants)
            "SELECT deployment_id, %(at)s, sum((last_metrics->>'running')::float), "
            "sum((last_metrics->>'waiting')::float), max((last_metrics->>'kv_cache')::float), count(*) "
            f"FROM {replicas} WHERE state = %(ready)s AND jsonb_typeof(last_metrics->'checked_at') = 'number' "
            "AND (last_metrics->>'checked_at')::float >= %(fresh)s "
            "GROUP BY deployment_id ORDER BY deployment_id "
            "ON CONFLICT (deployment_id, at) DO UPDATE SET "
            f"running = GREATEST({table}.running, EXCLUDED.running), "
            f"waiting = GREATEST({table}.waiting, EXCLUDED.waiting), "
            f"kv_cache = GREATEST({table}.kv_cache, EXCLUDED.kv_cache), "
            f"replicas = GREATEST({table}.replicas, EXCLUDED.replicas)",
            {
                "at": load_sample_step_start(now),
                "ready": Replica.State.READY,
                "fresh": now.timestamp() - LOAD_FRESH_SECONDS,
            },
        )
        return int(cursor.rowcount)


def deployment_load_prune(*, older_than_days: int | None = None, batch: int = 10_000) -> int:
    """Delete load samples past INFERIA_LOAD_HISTORY_DAYS, in batches. Returns how many were deleted."""
    days = settings.INFERIA_LOAD_HISTORY_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(DeploymentLoadSample.objects.filter(at__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += DeploymentLoadSample.objects.filter(id__in=ids).delete()[0]


__all__ = ["LOAD_FRESH_SECONDS", "deployment_load_prune", "deployment_load_record", "load_sample_step_start"]
