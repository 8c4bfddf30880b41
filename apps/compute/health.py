"""The health checker: every few seconds, each live replica's adapter status, `/health` and a `/metrics` scrape.

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

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import aiohttp
from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.compute.adapters import AdapterError, ReplicaPhase, adapter_for
from apps.compute.adapters.external import external_upstream_headers
from apps.compute.adapters.http import http_call
from apps.compute.events import ReplicaEndpointChanged
from apps.compute.load_history import deployment_load_record
from apps.compute.models import Replica
from apps.compute.replica_logs import replicas_logs_publish
from apps.compute.replica_states import replica_transition
from apps.compute.routing import endpoint_base, replica_load_store
from inferia_runtime.events import event_publish

logger = logging.getLogger(__name__)

RState = Replica.State
CHECKED_STATES = (RState.STARTING, RState.READY, RState.UNHEALTHY)
PROBE_THREADS = 16
# vLLM's gauge names (older releases call KV-cache use gpu_cache_usage_perc).
RUNNING_METRIC = "vllm:num_requests_running"
WAITING_METRIC = "vllm:num_requests_waiting"
KV_CACHE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


class HealthOutcome(StrEnum):
    """What one check did to a replica (`replicas_health_check` counts them)."""

    HEALTHY = "healthy"  # answered: READY, or back to READY
    STARTING = "starting"  # not up yet, still within its starting timeout
    MISSED = "missed"  # did not answer, not yet enough misses in a row to leave routing
    UNHEALTHY = "unhealthy"  # missed INFERIA_HEALTH_FAILURES checks in a row: out of routing
    FAILED = "failed"  # gone, never started, or unhealthy for too long: the reconciler replaces it


@dataclass(frozen=True)
class EngineLoad:
    """A replica's load as the router weighs it: requests running, requests waiting, KV-cache use (0..1)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache: float = 0.0

    def as_metrics(self, checked_at: float) -> dict[str, float]:
        """The shape of `Replica.last_metrics` (the gateway's catalog reads these keys)."""
        return {"running": self.running, "waiting": self.waiting, "kv_cache": self.kv_cache, "checked_at": checked_at}


def engine_load_parse(text: str) -> EngineLoad:
    """Read vLLM's Prometheus exposition: running and waiting summed over models, the highest KV-cache use."""
    running = waiting = 0.0
    kv_cache: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == RUNNING_METRIC:
                running += sample.value
            elif sample.name == WAITING_METRIC:
                waiting += sample.value
            elif sample.name in KV_CACHE_METRICS:
                kv_cache[sample.name] = max(kv_cache.get(sample.name, 0.0), sample.value)
    kv = next((kv_cache[name] for name in KV_CACHE_METRICS if name in kv_cache), 0.0)
    return EngineLoad(running=running, waiting=waiting, kv_cache=kv)


def engine_load_from_report(metrics: dict[str, Any]) -> EngineLoad:
    """A pushed heartbeat's metrics, by our names (running, waiting, kv_cache) or vLLM's; ValueError if malformed."""

    def number(*names: str) -> float:
        for name in names:
            if name in metrics:
                value = metrics[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"metric {name} must be a non-negative number")
                return float(value)
        return 0.0

    return EngineLoad(
        running=number("running", "num_requests_running", RUNNING_METRIC),
        waiting=number("waiting", "num_requests_waiting", WAITING_METRIC),
        kv_cache=min(number("kv_cache", "kv_cache_usage_perc", "gpu_cache_usage_perc", *KV_CACHE_METRICS), 1.0),
    )


@dataclass(frozen=True)
class Probe:
    """One check of one replica: the adapter's phase and the load scraped when it answered."""

    phase: ReplicaPhase
    detail: str = ""
    load: EngineLoad | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # An endpoint the adapter learnt after provisioning (a cloud VM's address), to record on the replica.
    endpoint: str | None = None


def replica_probe(replica: Replica) -> Probe:
    """Ask the replica's adapter where it stands and, when it is up, scrape its `/metrics`. Never raises."""
    provider = replica.deployment.pool.provider
    try:
        status = adapter_for(provider).status(replica)
    except AdapterError as error:
        return Probe(ReplicaPhase.STARTING, f"status failed: {error}")
    except Exception as error:  # a bug or an unexpected provider answer must not stop the other checks
        logger.exception("status of replica %s failed", replica.pk)
        return Probe(ReplicaPhase.STARTING, f"status failed: {type(error).__name__}")
    # Adapters that learn the address only once the node is up (SkyPilot) report it with the status.
    learnt = status.endpoint if status.endpoint and status.endpoint != replica.endpoint else None
    endpoint = learnt or replica.endpoint
    if status.phase != ReplicaPhase.READY or not endpoint:
        return Probe(status.phase, status.detail, endpoint=learnt)
    external = provider.kind == "external"
    try:
        response = http_call(
            "GET",
            endpoint_base(endpoint) + "/metrics",
            headers=external_upstream_headers(adapter_for(provider).credentials()) if external else None,
            timeout_s=settings.INFERIA_HEALTH_TIMEOUT_SECONDS,
            ssrf_guard=external,  # user-supplied endpoints are SSRF-checked at every connection
        )
        load = engine_load_parse(response.text) if response.status == 200 else None
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        load = None  # healthy, but no load to report (a hosted API without /metrics)
    return Probe(ReplicaPhase.READY, status.detail, load, endpoint=learnt)


def replicas_health_check() -> dict[HealthOutcome, int]:
    """Check every live replica (probes in parallel threads), apply the results; counts by outcome."""
    replicas = list(Replica.objects.filter(state__in=CHECKED_STATES).select_related("deployment__pool__provider"))
    if not replicas:
        return {}
    with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, len(replicas))) as pool:
        probes = list(pool.map(replica_probe, replicas))
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
    for replica, probe in zip(replicas, probes, strict=True):
        outcome = replica_health_apply(replica=replica, probe=probe)
        counts[outcome] = counts.get(outcome, 0) + 1
    try:
        deployment_load_record()
    except DatabaseError:  # the load history is for charts: losing one sample must not fail the checks
        logger.exception("recording the deployments' load failed")
    return counts


def _push_fresh(replica: Replica, now: datetime) -> bool:
    fresh = timedelta(seconds=settings.INFERIA_HEALTH_PUSH_FRESH_SECONDS)
    return replica.last_pushed_at is not None and now - replica.last_pushed_at <= fresh


def replica_health_apply(*, replica: Replica, probe: Probe) -> HealthOutcome:
    """Move `replica` according to one probe; every write is conditional on the state it was read in, so a
    replica stopped meanwhile is left alone."""
    now = timezone.now()
    if probe.phase in (ReplicaPhase.FAILED, ReplicaPhase.STOPPED):
        _replica_move(replica, RState.FAILED, last_error=probe.detail[:2000] or "gone")
        return HealthOutcome.FAILED
    live = Replica.objects.filter(pk=replica.pk, state=replica.state)
    if probe.endpoint and probe.endpoint != replica.endpoint and live.update(endpoint=probe.endpoint):
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
            replica_load_store(
                replica_id=replica.pk,
                running=load.running,
                waiting=load.waiting,
                kv_cache=load.kv_cache,
                checked_at=checked_at,
            )
        if replica.state != RState.READY:
            if _replica_move(replica, RState.READY, last_error="", **fields):
                _lora_sync_if_any(replica)
        else:
            live.update(**fields)  # no event: load and heartbeats change nothing the catalog caches
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
    live.update(failed_checks=missed, last_error=probe.detail[:2000])
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
