"""What compute writes for the gateway's router to read: each replica's engine address as a server root, and each
READY replica's load as the health checker last scraped it. The gateway reads these (apps/gateway/catalog.py,
runtime.py); compute never reads the gateway. Pages read the load summed (`replicas_live_load`), so the key layout
stays in this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from django.db.models import QuerySet

from apps.compute.models import Replica
from inferia_runtime.redis_clients import sync_redis

# A hash per replica written by the health checker (see `replica_load_store`): running, waiting, kv_cache, checked_at.
REPLICA_LOAD_KEY = "inferia:replica:{replica_id}:load"
REPLICA_LOAD_TTL_S = 300  # a replica nobody checks any more should not steer routing forever
# Every replica's load in one round trip, as one line of text per key ("running waiting kv_cache checked_at", empty when
# unknown): a pipeline of one HMGET per replica costs the reader about 18 ms of CPU for a thousand replicas, mostly in
# parsing replies, where this costs 1 ms.
_LOADS_SCRIPT = """
local lines = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, 'running', 'waiting', 'kv_cache', 'checked_at')
  if v[1] then
    lines[i] = v[1] .. ' ' .. (v[2] or '0') .. ' ' .. (v[3] or '0') .. ' ' .. (v[4] or '0')
  else
    lines[i] = ''
  end
end
return table.concat(lines, '\\n')
"""


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


async def replica_loads_read(
    *, client: aioredis.Redis, replica_ids: Sequence[int]
) -> list[tuple[float, float, float, float] | None]:
    """The load of each replica as `replica_load_store` recorded it, in order: (running, waiting, kv_cache,
    checked_at), or None when none is recorded (never checked, or expired). One Redis round trip."""
    if not replica_ids:
        return []
    keys = [REPLICA_LOAD_KEY.format(replica_id=replica_id) for replica_id in replica_ids]
    answer = await client.eval(_LOADS_SCRIPT, len(keys), *keys)
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    loads: list[tuple[float, float, float, float] | None] = []
    for line in text.split("\n"):
        values = line.split()
        loads.append((float(values[0]), float(values[1]), float(values[2]), float(values[3])) if values else None)
    return loads


@dataclass(frozen=True)
class ReplicaLoad:
    """One replica's load as a check scraped it (see `replica_load_store`)."""

    replica_id: int
    running: float
    waiting: float
    kv_cache: float
    checked_at: float


def replica_loads_store(*, loads: list[ReplicaLoad]) -> None:
    """`replica_load_store` for many replicas in one Redis round trip (a health check cycle's load)."""
    pipe = sync_redis().pipeline(transaction=False)
    for load in loads:
        key = REPLICA_LOAD_KEY.format(replica_id=load.replica_id)
        mapping = {"running": load.running, "waiting": load.waiting, "kv_cache": load.kv_cache}
        pipe.hset(key, mapping={**mapping, "checked_at": load.checked_at})
        pipe.expire(key, REPLICA_LOAD_TTL_S)
    pipe.execute()


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


def replica_loads_by_id(*, replica_ids: Sequence[int]) -> dict[int, ReplicaLoad]:
    """The recorded load of each of `replica_ids` that has one (one Redis round trip; raises redis.RedisError)."""
    if not replica_ids:
        return {}
    keys = [REPLICA_LOAD_KEY.format(replica_id=replica_id) for replica_id in replica_ids]
    answer = sync_redis().eval(_LOADS_SCRIPT, len(keys), *keys)
    text = answer.decode() if isinstance(answer, bytes) else str(answer)
    loads: dict[int, ReplicaLoad] = {}
    for replica_id, line in zip(replica_ids, text.split("\n"), strict=False):
        values = line.split()
        if values:
            running, waiting, kv_cache, checked_at = (float(value) for value in values)
            loads[replica_id] = ReplicaLoad(replica_id, running, waiting, kv_cache, checked_at)
    return loads
