"""The health checker: every few seconds, each live replica's adapter status, `/health` and a `/metrics` scrape.

One cycle asks every engine at once (apps/compute/health_probes.py) and writes in batches: the load in one Redis
pipeline, the replicas that keep their state in one UPDATE per 1,000; only a change of state is written replica by
replica, through `replica_transition` (which records it). So a cycle over 1,000 replicas fits in its 2 s period on
one worker (`make bench`, tests/bench/bench_health.py).

The load it scrapes (vLLM's running and waiting requests and KV-cache use) goes to Redis for the gateways' routers
(`apps.compute.routing.replica_load_store`) and to `Replica.last_metrics`. A replica whose process is gone fails at
once (the reconciler replaces it); one that misses INFERIA_HEALTH_FAILURES checks in a row becomes UNHEALTHY and
leaves routing, and comes back to READY when it answers again. A replica that pushes heartbeats
(`POST /api/nodes/heartbeat`, for nodes behind NAT) is healthy while either its poll or its push is fresh.
After each check the deployments' load goes to their load history (apps/compute/load_history.py), for charts.
The new output of every replica that is not serving (starting, unhealthy, failing) goes to the console's live page
(apps/compute/replica_logs.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.compute.adapters import ReplicaPhase
from apps.compute.events import ReplicaEndpointChanged
from apps.compute.health_probes import Probe, engine_load_from_report, replica_probe, replicas_probe
from apps.compute.load_history import deployment_load_record
from apps.compute.models import Replica
from apps.compute.replica_logs import replicas_logs_publish
from apps.compute.replica_states import replica_transition
from apps.compute.routing import ReplicaLoad, replica_load_store, replica_loads_store
from inferia_runtime.engine_load import EngineLoad, engine_load_parse
from inferia_runtime.events import event_publish

logger = logging.getLogger(__name__)

RState = Replica.State
# DRAINING replicas are checked for their load only: the reconciler stops them once they run nothing.
CHECKED_STATES = (RState.STARTING, RState.READY, RState.UNHEALTHY, RState.DRAINING)


class HealthOutcome(StrEnum):
    """What one check did to a replica (`replicas_health_check` counts them)."""

    HEALTHY = "healthy"  # answered: READY, or back to READY
    STARTING = "starting"  # not up yet, still within its starting timeout
    MISSED = "missed"  # did not answer, not yet enough misses in a row to leave routing
    UNHEALTHY = "unhealthy"  # missed INFERIA_HEALTH_FAILURES checks in a row: out of routing
    FAILED = "failed"  # gone, never started, or unhealthy for too long: the reconciler replaces it


def replicas_health_check() -> dict[HealthOutcome, int]:
    """Check every live replica and apply the results: the probes concurrently, the writes batched (one Redis
    pipeline for the load, one UPDATE for the replicas that stay as they are; a change of state goes through
    `replica_transition` one by one). Returns counts by outcome."""
    replicas = list(Replica.objects.filter(state__in=CHECKED_STATES).select_related("deployment", "pool__provider"))
    if not replicas:
        return {}
    probes = replicas_probe(replicas)
    # Output of replicas not (or no longer) serving goes to the console, read before the results are applied: a
    # replica that failed is torn down by the reconcile this check triggers, and its output with it.
    replicas_logs_publish(
        [
            (replica, probe.phase in (ReplicaPhase.FAILED, ReplicaPhase.STOPPED))
            for replica, probe in zip(replicas, probes, strict=True)
            if replica.state != RState.READY or probe.phase != ReplicaPhase.READY
        ]
    )
    counts: dict[HealthOutcome, int] = {}
    writes = _Writes()
    for replica, probe in zip(replicas, probes, strict=True):
        outcome = replica_health_apply(replica=replica, probe=probe, writes=writes)
        counts[outcome] = counts.get(outcome, 0) + 1
    writes.flush()
    try:
        deployment_load_record()
    except DatabaseError:  # the load history is for charts: losing one sample must not fail the checks
        logger.exception("recording the deployments' load failed")
    return counts


@dataclass(frozen=True)
class ReplicaCheckRow:
    """One replica's check that leaves its state as it is: its count of missed checks and, when None is not given,
    its heartbeat, metrics and last error."""

    replica_id: int
    state: str
    failed_checks: int
    heartbeat_at: datetime | None = None
    metrics: dict[str, float] | None = None
    last_error: str | None = None


CHECK_ROWS_PER_STATEMENT = 1000


def replicas_check_record(*, rows: list[ReplicaCheckRow]) -> int:
    """Write the checks of replicas that keep their state in one UPDATE per 1,000, each row applied only while its
    replica is still in the state the check read (a replica stopped meanwhile is left alone). Returns rows written."""
    table = Replica._meta.db_table
    written = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHECK_ROWS_PER_STATEMENT):
            chunk = rows[start : start + CHECK_ROWS_PER_STATEMENT]
            values = ", ".join(
                ["(%s::bigint, %s::varchar, %s::int, %s::timestamptz, %s::jsonb, %s::text)"] * len(chunk)
            )
            cursor.execute(
                f"UPDATE {table} AS r SET failed_checks = v.failed_checks, "  # noqa: S608 (constants and placeholders)
                "last_heartbeat_at = COALESCE(v.heartbeat_at, r.last_heartbeat_at), "
                "last_metrics = COALESCE(v.metrics, r.last_metrics), last_error = COALESCE(v.last_error, r.last_error) "
                f"FROM (VALUES {values}) AS v(id, state, failed_checks, heartbeat_at, metrics, last_error) "
                "WHERE r.id = v.id AND r.state = v.state",
                [value for row in chunk for value in _check_row_values(row)],
            )
            written += cursor.rowcount
    return written


def _check_row_values(row: ReplicaCheckRow) -> tuple[Any, ...]:
    metrics = json.dumps(row.metrics) if row.metrics is not None else None
    return (row.replica_id, row.state, row.failed_checks, row.heartbeat_at, metrics, row.last_error)


@dataclass
class _Writes:
    """What a check writes for replicas that keep their state, gathered so that a cycle costs one Redis pipeline and
    one UPDATE (per 1,000 replicas) rather than a round trip each. Each row stays conditional on the state it was
    read in."""

    loads: list[ReplicaLoad] = field(default_factory=list)
    rows: list[ReplicaCheckRow] = field(default_factory=list)

    def load(self, replica: Replica, load: EngineLoad, checked_at: float) -> None:
        self.loads.append(ReplicaLoad(replica.pk, load.running, load.waiting, load.kv_cache, checked_at))

    def flush(self) -> None:
        if self.loads:
            replica_loads_store(loads=self.loads)
        if self.rows:
            replicas_check_record(rows=self.rows)
        self.loads, self.rows = [], []


def _push_fresh(replica: Replica, now: datetime) -> bool:
    fresh = timedelta(seconds=settings.INFERIA_HEALTH_PUSH_FRESH_SECONDS)
    return replica.last_pushed_at is not None and now - replica.last_pushed_at <= fresh


def replica_health_apply(*, replica: Replica, probe: Probe, writes: _Writes | None = None) -> HealthOutcome:
    """Move `replica` according to one probe; every write is conditional on the state it was read in, so a
    replica stopped meanwhile is left alone. With `writes`, what does not change its state waits there for the
    caller's `flush`; without, it is written at once."""
    if writes is None:
        writes = _Writes()
        try:
            return replica_health_apply(replica=replica, probe=probe, writes=writes)
        finally:
            writes.flush()
    now = timezone.now()
    if replica.state == RState.DRAINING:
        return _draining_apply(replica, probe, writes, now)
    if probe.phase in (ReplicaPhase.FAILED, ReplicaPhase.STOPPED):
        _replica_move(replica, RState.FAILED, last_error=probe.detail[:2000] or "gone")
        return HealthOutcome.FAILED
    if (
        probe.endpoint
        and probe.endpoint != replica.endpoint
        and Replica.objects.filter(pk=replica.pk, state=replica.state).update(endpoint=probe.endpoint)
    ):
        # Recorded before the replica can turn READY below, so it is never routed without its address; a READY
        # replica whose node came back on a new address is re-announced to the router.
        replica.endpoint = probe.endpoint
        serving = replica.state == RState.READY
        event_publish(
            ReplicaEndpointChanged(deployment_id=replica.deployment_id, replica_id=replica.pk, serving=serving)
        )
        if serving:
            _reconcile_soon(replica)
    if probe.phase == ReplicaPhase.READY or _push_fresh(replica, now):
        load = probe.load
        fields: dict[str, Any] = {"failed_checks": 0, "last_heartbeat_at": now}
        if load is not None:
            checked_at = time.time()
            fields["last_metrics"] = load.as_metrics(checked_at)
            writes.load(replica, load, checked_at)
        if replica.state != RState.READY:
            if _replica_move(replica, RState.READY, last_error="", **fields):
                _lora_sync_if_any(replica)
        else:
            # No event: load and heartbeats change nothing the catalog caches.
            writes.rows.append(ReplicaCheckRow(replica.pk, replica.state, 0, now, fields.get("last_metrics")))
        return HealthOutcome.HEALTHY
    if replica.state == RState.STARTING:
        started = replica.updated_at or replica.created_at
        if now - started > timedelta(seconds=settings.INFERIA_STARTING_TIMEOUT_SECONDS):
            detail = f"not ready after {settings.INFERIA_STARTING_TIMEOUT_SECONDS:.0f}s: {probe.detail}"
            _replica_move(replica, RState.FAILED, last_error=detail[:2000])
            return HealthOutcome.FAILED
        return HealthOutcome.STARTING
    missed = replica.failed_checks + 1
    if replica.state == RState.READY and missed >= settings.INFERIA_HEALTH_FAILURES:
        detail = f"missed {missed} health checks: {probe.detail}"
        _replica_move(replica, RState.UNHEALTHY, failed_checks=missed, last_error=detail[:2000])
        return HealthOutcome.UNHEALTHY
    if replica.state == RState.UNHEALTHY:
        since = replica.last_heartbeat_at or replica.updated_at
        if now - since > timedelta(seconds=settings.INFERIA_UNHEALTHY_REPLACE_SECONDS):
            detail = f"unhealthy for over {settings.INFERIA_UNHEALTHY_REPLACE_SECONDS:.0f}s: {probe.detail}"
            _replica_move(replica, RState.FAILED, last_error=detail[:2000])
            return HealthOutcome.FAILED
    writes.rows.append(ReplicaCheckRow(replica.pk, replica.state, missed, last_error=probe.detail[:2000]))
    return HealthOutcome.MISSED


def _draining_apply(replica: Replica, probe: Probe, writes: _Writes, now: datetime) -> HealthOutcome:
    """A draining replica is out of routing already: its load tells the reconciler when it has finished; one that
    died has nothing left to finish and stops."""
    if probe.phase in (ReplicaPhase.FAILED, ReplicaPhase.STOPPED):
        _replica_move(replica, RState.STOPPING, last_error=probe.detail[:2000] or "gone while draining")
        return HealthOutcome.FAILED
    if probe.phase == ReplicaPhase.READY and probe.load is not None:
        metrics = probe.load.as_metrics(time.time())
        writes.rows.append(ReplicaCheckRow(replica.pk, replica.state, 0, now, metrics))
        return HealthOutcome.HEALTHY
    writes.rows.append(ReplicaCheckRow(replica.pk, replica.state, replica.failed_checks + 1))
    return HealthOutcome.MISSED


def _replica_move(replica: Replica, to_state: str, **fields: Any) -> bool:
    """`replica_transition`, then the deployment is reconciled (replace a failed replica, recompute its state)."""
    moved = replica_transition(replica=replica, to_state=to_state, **fields)
    if moved:
        _reconcile_soon(replica)
    return moved


def _reconcile_soon(replica: Replica) -> None:
    from apps.compute.services import enqueue_reconcile

    deployment_id = replica.deployment_id
    transaction.on_commit(lambda: enqueue_reconcile(deployment_id))


def _lora_sync_if_any(replica: Replica) -> None:
    """A replica that just became READY may have started from arguments older than its deployment's adapters."""
    from apps.compute.lora import enqueue_lora_sync, lora_names

    if lora_names(replica.deployment.engine_args):
        transaction.on_commit(lambda: enqueue_lora_sync(replica.deployment_id))


def replica_heartbeat_record(*, replica: Replica, state: str, load: EngineLoad | None) -> Replica:
    """A node's pushed heartbeat (the node authenticated by its token). `state` is what the node says it is:
    "ready" refreshes the push and, from STARTING or UNHEALTHY, makes the replica READY at once; "starting" only
    records its metrics; "failed" fails it for the reconciler to replace."""
    now = timezone.now()
    if state == "failed":
        _replica_move(replica, RState.FAILED, last_error="the node reported failure")
        replica.refresh_from_db()
        return replica
    fields: dict[str, Any] = {}
    if load is not None:
        checked_at = time.time()
        fields["last_metrics"] = load.as_metrics(checked_at)
        replica_load_store(
            replica_id=replica.pk, running=load.running, waiting=load.waiting, kv_cache=load.kv_cache,
            checked_at=checked_at,
        )  # fmt: skip
    if state == "ready":
        fields.update(last_pushed_at=now, last_heartbeat_at=now, failed_checks=0)
        if replica.state in (RState.STARTING, RState.UNHEALTHY):
            _replica_move(replica, RState.READY, last_error="", **fields)
            fields = {}
    if fields:
        Replica.objects.filter(pk=replica.pk, state=replica.state).update(**fields)
    replica.refresh_from_db()
    return replica


__all__ = [
    "EngineLoad",
    "HealthOutcome",
    "Probe",
    "ReplicaCheckRow",
    "engine_load_from_report",
    "engine_load_parse",
    "replica_health_apply",
    "replica_heartbeat_record",
    "replica_probe",
    "replicas_check_record",
    "replicas_health_check",
    "replicas_probe",
]
