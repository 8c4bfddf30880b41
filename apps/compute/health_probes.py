"""The probes of the health checker: what each replica's provider says and what its engine answers, every engine
asked at once.

A check asks the adapters first (`ComputeAdapter.node_status`, in threads: some ask a remote API), then every engine's
`/health` (when the adapter left it to the caller) and `/metrics` concurrently on one event loop, at most
INFERIA_HEALTH_CONCURRENCY in flight, each request bounded by INFERIA_HEALTH_TIMEOUT_SECONDS. `apps/compute/health.py`
applies what they found.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from django.conf import settings

from apps.compute.adapters import AdapterError, ReplicaPhase, ReplicaStatus, adapter_for
from apps.compute.adapters.base import engine_health_judge
from apps.compute.adapters.external import external_upstream_headers
from apps.compute.models import Replica
from apps.compute.routing import endpoint_base
from apps.compute.urlsafety import guarded_connector
from inferia_runtime.engine_load import KV_CACHE_METRICS, RUNNING_METRIC, WAITING_METRIC, EngineLoad, engine_load_parse

logger = logging.getLogger(__name__)

PROBE_THREADS = 16
# An engine's answers are read up to these sizes: an external endpoint is user-supplied and must not make the worker
# buffer whatever it sends (vLLM's /metrics is tens of kilobytes, more with many LoRA adapters).
HEALTH_MAX_BYTES = 64 * 1024
METRICS_MAX_BYTES = 4 * 1024 * 1024


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


@dataclass(frozen=True)
class _NodeView:
    """What a replica's provider says (its engine's `/health` possibly still to ask) and how to reach its engine."""

    replica: Replica
    status: ReplicaStatus
    headers: dict[str, str] | None = None
    guarded: bool = False  # a user-supplied endpoint: SSRF-checked at every connection


def _node_view(replica: Replica) -> _NodeView:
    """The provider's side of a check (`ComputeAdapter.node_status`), in a thread: adapters are synchronous and some
    ask a remote API. Never raises."""
    provider = replica.pool.provider
    try:
        adapter = adapter_for(provider)
        status = adapter.node_status(replica)
        external = provider.kind == "external"
        headers = external_upstream_headers(adapter.credentials()) if external else None
    except AdapterError as error:
        return _NodeView(replica, ReplicaStatus(ReplicaPhase.STARTING, f"status failed: {error}"))
    except Exception as error:  # a bug or an unexpected provider answer must not stop the other checks
        logger.exception("status of replica %s failed", replica.pk)
        return _NodeView(replica, ReplicaStatus(ReplicaPhase.STARTING, f"status failed: {type(error).__name__}"))
    return _NodeView(replica, status, headers, guarded=external)


async def _body_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes | None:
    """The whole body, or None past `limit` bytes (read no further)."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def _engine_ask(view: _NodeView, session: aiohttp.ClientSession, limit: asyncio.Semaphore) -> Probe:
    """The engine's side: its `/health` when the adapter left that to us, then a `/metrics` scrape when it is up."""
    replica, status = view.replica, view.status
    async with limit:
        if status.engine:
            try:
                async with session.get(endpoint_base(status.engine) + "/health") as response:
                    await _body_bounded(response, HEALTH_MAX_BYTES)
                    status = engine_health_judge(status, answered=response.status)
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                status = engine_health_judge(status, answered=None, error=type(error).__name__)
        # Adapters that learn the address only once the node is up (SkyPilot) report it with the status.
        learnt = status.endpoint if status.endpoint and status.endpoint != replica.endpoint else None
        endpoint = learnt or replica.endpoint
        if status.phase != ReplicaPhase.READY or not endpoint:
            return Probe(status.phase, status.detail, endpoint=learnt)
        try:
            async with session.get(endpoint_base(endpoint) + "/metrics", headers=view.headers) as response:
                body = await _body_bounded(response, METRICS_MAX_BYTES)
                load = engine_load_parse(body.decode()) if response.status == 200 and body is not None else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):  # UnicodeDecodeError is a ValueError
            load = None  # healthy, but no load to report (a hosted API without /metrics)
    return Probe(ReplicaPhase.READY, status.detail, load, endpoint=learnt)


async def _engines_ask(views: list[_NodeView]) -> list[Probe]:
    """Every engine at once on this event loop, at most INFERIA_HEALTH_CONCURRENCY in flight, each request bounded by
    INFERIA_HEALTH_TIMEOUT_SECONDS: a cycle over N replicas costs about N / concurrency round trips, however many do
    not answer. Connections last one cycle (one per replica, kept alive between its two requests)."""
    timeout = aiohttp.ClientTimeout(total=settings.INFERIA_HEALTH_TIMEOUT_SECONDS)
    concurrency = max(1, settings.INFERIA_HEALTH_CONCURRENCY)
    limit = asyncio.Semaphore(concurrency)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as trusted,
        aiohttp.ClientSession(timeout=timeout, connector=guarded_connector(limit=concurrency)) as guarded,
    ):
        return await asyncio.gather(*(_engine_ask(v, guarded if v.guarded else trusted, limit) for v in views))


def replicas_probe(replicas: list[Replica]) -> list[Probe]:
    """One probe per replica, in order: the providers' answers in parallel threads, then every engine concurrently
    on one event loop. Never raises."""
    if len(replicas) <= 1:
        views = [_node_view(replica) for replica in replicas]  # on this thread: its database connection
    else:
        with ThreadPoolExecutor(max_workers=min(PROBE_THREADS, len(replicas))) as pool:
            views = list(pool.map(_node_view, replicas))
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(_engines_ask(views))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's when installed: about half the CPU per request of asyncio's own loop, which a cycle is made of."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def replica_probe(replica: Replica) -> Probe:
    """Ask the replica's adapter where it stands and, when it is up, scrape its `/metrics`. Never raises."""
    return replicas_probe([replica])[0]
