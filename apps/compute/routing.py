"""What compute writes for the gateway's router to read: each replica's engine address as a server root, and each
READY replica's load as the health checker last scraped it. The gateway reads these (apps/gateway/catalog.py,
runtime.py); compute never reads the gateway. Pages read the load summed (`replicas_live_load`), so the key layout
stays in this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from django.db.models import QuerySet

from apps.compute.models import Replica
from inferia_runtime.redis_clients import sync_redis

# A hash per replica written by the health checker (see `replica_load_store`): running, waiting, kv_cache, checked_at.
REPLICA_LOAD_KEY = "inferia:replica:{replica_id}:load"
REPLICA_LOAD_TTL_S = 300  # a replica nobody checks any more should not steer routing forever


def endpoint_base(endpoint: str) -> str:
    """A replica's endpoint as its server root: accepts `http://host:port`, with or without a trailing `/v1`."""
    base = endpoint.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def replica_load_store(
    *, replica_id: int, running: float, waiting: float, kv_cache: float, checked_at: float | None = None
) -> None:
    """Record a replica's load as its health check scraped it from the engine's `/metrics` (vLLM's
    `num_requests_running`, `num_requests_waiting`, `kv_cache_usage_perc`). Every gateway reads it."""
    key = REPLICA_LOAD_KEY.format(replica_id=replica_id)
    client = sync_redis()
    client.hset(
        key,
        mapping={
            "running": running,
            "waiting": waiting,
            "kv_cache": kv_cache,
            "checked_at": checked_at if checked_at is not None else time.time(),
        },
    )
    client.expire(key, REPLICA_LOAD_TTL_S)


@dataclass(frozen=True)
class LiveLoad:
    """What the engines of the visible READY replicas report right now (scraped by the health checker into Redis):
    requests running and waiting, and the highest KV-cache use. `available` is False when Redis could not answer."""

    replicas: int
    running: float
    waiting: float
    kv_cache_max: float
    available: bool = True


def replicas_live_load(*, replicas: QuerySet[Replica]) -> LiveLoad:
    """Sum the live load of `replicas` (already narrowed by `.restrict()`) that are READY (one query, one Redis round
    trip)."""
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
