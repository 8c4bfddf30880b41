"""The fleet as Prometheus sees it, read from PostgreSQL and Redis at scrape time: replicas by deployment, pool,
provider and state; each deployment's state and desired replica count; GPUs in use and available per pool; and each
READY replica's load as its engine last reported it (running and waiting requests, KV-cache use).

Read at scrape time rather than counted by the processes that change the fleet: the worker that moves a replica and
the web process that is scraped are different processes, and every web process then reports the same values
(aggregate with `max`, never `sum`, across scrape targets). Label values are names of configured objects (served
model names with their owner's slug, pool and provider names, replica ids), so series are bounded by the fleet and
vanish with the objects they name. The gateway's `/metrics` (apps/gateway/metrics_export.py) includes this
collector; compute itself imports nothing of the gateway.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

import redis
from django.db import DatabaseError
from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from apps.compute.capacity import LIVE_REPLICA_STATES, replica_gpus
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.compute.routing import replica_loads_by_id

_DEPLOYMENT = ["deployment", "organization"]


def _owner(slug: str | None) -> str:
    return slug or ""  # "" for the platform's own deployments


class FleetCollector:
    """A prometheus_client collector of the fleet's state (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        try:
            metrics = self._read()
        except (DatabaseError, redis.RedisError):
            return  # PostgreSQL or Redis is down: `inferia_dependency_up` says which
        yield from metrics

    def _read(self) -> list[Metric]:
        # A replica runs on its deployment's pool or on one of its placement pools: pools are counted per replica.
        pools = {
            pk: ((name, provider), per_node * nodes, kind != Provider.Kind.EXTERNAL)
            for pk, name, provider, kind, per_node, nodes in ComputePool.objects.values_list(
                "id", "name", "provider__name", "provider__kind", "gpus_per_node", "max_nodes"
            )
        }  # an external provider's servers are not GPUs Inferia holds: those pools have no GPU series
        deployments = {
            row[0]: row
            for row in ModelDeployment.objects.values_list(
                "id", "served_model_name", "organization__slug", "state", "desired_replicas", "model_id", "engine_args"
            )
        }
        state = GaugeMetricFamily(
            "inferia_deployment_state", "1 for each deployment's current state.", labels=[*_DEPLOYMENT, "state"]
        )
        desired = GaugeMetricFamily(
            "inferia_deployment_replicas_desired", "Replicas each deployment is asked to run.", labels=_DEPLOYMENT
        )
        gpus_per_replica: dict[int, int] = {}
        for pk, name, org, dstate, want, model_id, engine_args in deployments.values():
            state.add_metric([name, _owner(org), dstate], 1)
            desired.add_metric([name, _owner(org)], want)
            gpus_per_replica[pk] = replica_gpus(model_id=model_id, served_model_name=name, engine_args=engine_args)

        replicas: Counter[tuple[str, str, str, str, str]] = Counter()
        gpus_used: Counter[tuple[str, str]] = Counter()
        # Counted by PostgreSQL: stopped replicas pile up over time, their rows need not travel.
        groups = Replica.objects.order_by().values_list("deployment_id", "pool_id", "state").annotate(n=Count("id"))
        for deployment_id, pool_id, rstate, count in groups:
            if deployment_id not in deployments or pool_id not in pools:
                continue  # created since those were read: the next scrape counts it
            _, name, org, *_rest = deployments[deployment_id]
            pool_labels, _gpus, counted = pools[pool_id]
            replicas[(name, _owner(org), *pool_labels, rstate)] += count
            if rstate in LIVE_REPLICA_STATES and counted:
                gpus_used[pool_labels] += count * gpus_per_replica[deployment_id]
        ready = list(Replica.objects.filter(state=Replica.State.READY).values_list("id", "deployment_id"))

        by_state = GaugeMetricFamily(
            "inferia_replicas",
            "Replicas by deployment, the pool and provider they run on, and state.",
            labels=[*_DEPLOYMENT, "pool", "provider", "state"],
        )
        for labels, count in replicas.items():
            by_state.add_metric(list(labels), count)
        capacity: Counter[tuple[str, str]] = Counter()
        for pool_labels, gpus, counted in pools.values():
            if counted:
                capacity[pool_labels] += gpus  # pools of the same name under different owners add up
        in_use = GaugeMetricFamily(
            "inferia_pool_gpus_in_use", "GPUs held by live replicas.", labels=["pool", "provider"]
        )
        total = GaugeMetricFamily(
            "inferia_pool_gpus", "GPUs a pool may hold (its nodes times GPUs per node).", labels=["pool", "provider"]
        )
        for pool_labels, count in capacity.items():
            total.add_metric(list(pool_labels), count)
            in_use.add_metric(list(pool_labels), gpus_used.get(pool_labels, 0))
        return [state, desired, by_state, in_use, total, *self._loads(ready, deployments)]

    @staticmethod
    def _loads(ready: list[tuple[int, int]], by_id: dict[int, tuple]) -> list[Metric]:  # type: ignore[type-arg]
        labels = ["replica", *_DEPLOYMENT]
        families = {
            "running": GaugeMetricFamily(
                "inferia_replica_requests_running", "Requests the engine reports running.", labels=labels
            ),
            "waiting": GaugeMetricFamily(
                "inferia_replica_requests_waiting", "Requests the engine reports queued.", labels=labels
            ),
            "kv_cache": GaugeMetricFamily(
                "inferia_replica_kv_cache_usage_ratio", "KV-cache use the engine reports (0 to 1).", labels=labels
            ),
        }
        loads = replica_loads_by_id(replica_ids=[replica_id for replica_id, _ in ready])
        grouped: dict[str, list[tuple[list[str], float]]] = defaultdict(list)
        for replica_id, deployment_id in ready:
            load, row = loads.get(replica_id), by_id.get(deployment_id)
            if load is None or row is None:
                continue  # not checked yet, or its record expired: no value rather than a made-up zero
            values = [str(replica_id), row[1], _owner(row[2])]
            grouped["running"].append((values, load.running))
            grouped["waiting"].append((values, load.waiting))
            grouped["kv_cache"].append((values, load.kv_cache))
        for key, family in families.items():
            for values, value in grouped[key]:
                family.add_metric(values, value)
        return list(families.values())
