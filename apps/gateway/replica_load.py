"""Reading the replicas' live load for people: what the health checker stored per replica for routing
(`apps.gateway.catalog.replica_load_store`), summed over the replicas a page shows. The key layout stays here, with
its writer's module; the console asks this function instead of rebuilding it."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.db.models import QuerySet

from apps.compute.models import Replica
from apps.gateway.catalog import REPLICA_LOAD_KEY
from inferia_runtime.redis_clients import sync_redis


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
    """Sum the live load of `replicas` (already narrowed by `restrict`) that are READY (one query, one Redis round
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
