"""How much a deployment may take: of its pools (its own, and the placement pools a replica fits on), each with
`max_nodes` nodes and every replica on a node of its own; and of the GPU quotas of its organisation and of the team
it is charged to, which the policy authority keeps (`Policy.gpus_max`), a replica counting its tensor parallel times
pipeline parallel size.

Two moments are checked. When someone (a person, the API, the autoscaler) asks for more replicas, the ask is refused
if other deployments already claim the nodes of its pools it needs: the live replicas on a pool, and what the
deployments whose own pool it is are asked to run beyond those. When the worker provisions, it starts no more
replicas than the pools have free nodes (live replicas of every deployment counted), so a lowered `max_nodes` or a
race between two asks never overbooks a pool; what it had to leave out is recorded on the deployment's history.

Pools of an external provider are left out: their replicas are servers someone else runs, not nodes Inferia starts.

GPU quotas are checked when more is asked for (they bound what the organisation commits to, as budgets do); a quota
lowered below what runs stops growth, it does not stop replicas.

Checks lock first (the pools' rows, in id order; the organisation's GPU count by an advisory lock), so two
deployments growing at once are counted one after the other. Callers hold the deployment's row before (the one
lock order everywhere).
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Count, Q

from apps.compute.engine import EngineArgsError, engine_spec_build
from apps.compute.models import ComputePool, DeploymentEvent, ModelDeployment, Provider, Replica
from apps.policies.selectors import gpu_quotas_for
from inferia_runtime.errors import DomainRefusal

RState = Replica.State
DState = ModelDeployment.State

# The replica states that hold a node (`apps.compute.replicas.ACTIVE_STATES`, which cannot be imported here: that
# module builds on the services that call this one).
# A DRAINING replica (a rollout's old one finishing its requests) still holds its node.
LIVE_REPLICA_STATES = (
    RState.PENDING, RState.PROVISIONING, RState.STARTING, RState.READY, RState.UNHEALTHY, RState.DRAINING,
)  # fmt: skip
# Deployment states in which the desired replica count stands (a stopping, stopped or failed one asks for nothing).
ASKING_STATES = (DState.PENDING, DState.PROVISIONING, DState.READY, DState.DEGRADED)


# What "free nodes" reads for a pool without a node limit: more than any deployment asks for.
REPLICAS_UNBOUNDED = 1 << 16


class CapacityRefusal(DomainRefusal):
    """More replicas than the pool has nodes for, or more GPUs than a quota allows."""


def pools_lock(pools: list[ComputePool]) -> list[ComputePool]:
    """The pools as they are now, in the order given, their rows locked until the transaction ends (taken in id
    order, the order every caller takes them in)."""
    locked = (
        ComputePool.objects.select_for_update(of=("self",))
        .select_related("provider")
        .filter(pk__in=[pool.pk for pool in pools])
        .order_by("pk")
    )
    fresh = {pool.pk: pool for pool in locked}
    return [fresh[pool.pk] for pool in pools if pool.pk in fresh]


def _unlimited(pool: ComputePool) -> bool:
    return pool.provider.kind == Provider.Kind.EXTERNAL


def pool_fits(pool: ComputePool, *, own: ComputePool, gpus: int) -> bool:
    """Whether a replica of `gpus` GPUs, of a deployment whose own pool is `own`, can run on a node of `pool`: as
    many GPUs per node, of the same type where both pools name one, on a provider Inferia starts nodes on."""
    if pool.pk == own.pk:
        return True
    same_type = not own.gpu_type or not pool.gpu_type or pool.gpu_type.strip().lower() == own.gpu_type.strip().lower()
    return pool.gpus_per_node >= gpus and same_type and not _unlimited(pool) and not _unlimited(own)


def deployment_pools(deployment: ModelDeployment) -> list[ComputePool]:
    """The pools `deployment`'s replicas may run on, cheapest (per GPU-hour) first: its own pool, and those of its
    placement pools a replica fits on (`pool_fits`); among equals its own pool, then the oldest."""
    own = ComputePool.objects.select_related("provider").get(pk=deployment.pool_id)
    if deployment.pk is None:
        return [own]
    gpus = _deployment_gpus(deployment)
    others = deployment.placement_pools.select_related("provider").exclude(pk=own.pk)
    pools = [own, *(pool for pool in others if pool_fits(pool, own=own, gpus=gpus))]
    return sorted(pools, key=lambda pool: (pool.cost_per_gpu_hour_micros, pool.pk != own.pk, pool.pk))


def pool_nodes_claimed(*, pool_id: int, exclude_deployment_id: int | None) -> int:
    """Nodes of the pool claimed by deployments other than the one excluded: the live replicas on it, and what
    those whose own pool it is are asked to run beyond their live replicas (wherever these run)."""
    live = (
        Replica.objects.filter(pool_id=pool_id, state__in=LIVE_REPLICA_STATES)
        .exclude(deployment_id=exclude_deployment_id)
        .count()
    )
    asked = (
        ModelDeployment.objects.filter(pool_id=pool_id, state__in=ASKING_STATES)
        .exclude(pk=exclude_deployment_id)
        .annotate(live=Count("replicas", filter=Q(replicas__state__in=LIVE_REPLICA_STATES)))
        .values_list("desired_replicas", "max_replicas", "live")
    )
    return live + sum(max(min(desired, maximum) - running, 0) for desired, maximum, running in asked)


def pool_capacity_check(*, deployment: ModelDeployment, replicas: int) -> None:
    """Refuse (CapacityRefusal) to let `deployment` ask for `replicas` replicas when its pools (`deployment_pools`)
    lack the nodes.

    The caller is in a transaction; the pools' rows stay locked until it ends."""
    pools = pools_lock(deployment_pools(deployment))
    if any(_unlimited(pool) for pool in pools):
        return
    claimed = {pool.pk: pool_nodes_claimed(pool_id=pool.pk, exclude_deployment_id=deployment.pk) for pool in pools}
    free = sum(max(pool.max_nodes - claimed[pool.pk], 0) for pool in pools)
    if replicas <= free:
        return
    nodes = sum(pool.max_nodes for pool in pools)
    names = ", ".join(repr(pool.name) for pool in pools)
    where = f"pool {names} has" if len(pools) == 1 else f"pools {names} have"
    raise CapacityRefusal(
        f"{where} {nodes} node(s) and other deployments claim {sum(claimed.values())}: "
        f"{free} replica(s) fit, not {replicas}"
    )


def deployment_capacity_check(*, deployment: ModelDeployment, replicas: int) -> None:
    """Refuse (CapacityRefusal) to let `deployment` ask for `replicas` replicas beyond its pool's nodes or the GPU
    quotas of its organisation and team; raises DomainRefusal for a team of another organisation. The caller is
    in a transaction, which keeps the locks taken until it ends."""
    pool_capacity_check(deployment=deployment, replicas=replicas)
    gpu_quota_check(deployment=deployment, replicas=replicas)


def replica_gpus(*, model_id: str, served_model_name: str, engine_args: Any) -> int:
    """GPUs one replica of a deployment takes: tensor parallel times pipeline parallel size (1 by default)."""
    try:
        return engine_spec_build(model_id=model_id, served_model_name=served_model_name, engine_args=engine_args).gpus
    except EngineArgsError:  # saved before a check existed; vLLM's own defaults then
        return 1


def _deployment_gpus(deployment: ModelDeployment) -> int:
    return replica_gpus(
        model_id=deployment.model_id,
        served_model_name=deployment.served_model_name,
        engine_args=deployment.engine_args,
    )


# The advisory lock space of organisations' GPU counts (any constant unique to it in this database).
_GPU_LOCK_SPACE = 0x47505551


def gpu_quota_check(*, deployment: ModelDeployment, replicas: int) -> None:
    """Refuse (CapacityRefusal) when `replicas` replicas of `deployment` would take its organisation, or the team
    it is charged to, past its GPU quota. Platform deployments and pools of external providers use no GPU of a
    tenant's quota."""
    organization_id = deployment.organization_id
    team = deployment.team
    if team is not None and team.organization_id != organization_id:
        raise DomainRefusal("the team belongs to another organisation")
    if organization_id is None or deployment.pool.provider.kind == Provider.Kind.EXTERNAL:
        return
    quotas = gpu_quotas_for(organization_id=organization_id, team_id=deployment.team_id)
    if quotas.organization is None and quotas.team is None:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_GPU_LOCK_SPACE, organization_id])
    per_replica = _deployment_gpus(deployment)
    asked = replicas * per_replica
    used_by_org, used_by_team = _gpus_claimed(organization_id, team_id=deployment.team_id, exclude=deployment.pk)
    shape = f"{replicas} replica(s) x {per_replica} GPU(s) = {asked}"
    if quotas.organization is not None and used_by_org + asked > quotas.organization:
        raise CapacityRefusal(
            f"the organisation's GPU quota is {quotas.organization} and its other deployments use {used_by_org}: "
            f"{max(quotas.organization - used_by_org, 0)} GPU(s) left, this deployment asks for {shape}"
        )
    if team is not None and quotas.team is not None and used_by_team + asked > quotas.team:
        raise CapacityRefusal(
            f"team {team.name!r}'s GPU quota is {quotas.team} and its other deployments use {used_by_team}: "
            f"{max(quotas.team - used_by_team, 0)} GPU(s) left, this deployment asks for {shape}"
        )


def _gpus_claimed(organization_id: int, *, team_id: int | None, exclude: int | None) -> tuple[int, int]:
    """GPUs the organisation's other deployments claim (as `pool_nodes_claimed` counts replicas), in all and those
    charged to `team_id`."""
    rows = (
        ModelDeployment.objects.filter(organization_id=organization_id)
        .exclude(pk=exclude)
        .exclude(pool__provider__kind=Provider.Kind.EXTERNAL)
        .annotate(live=Count("replicas", filter=Q(replicas__state__in=LIVE_REPLICA_STATES)))
        .values_list(
            "state",
            "desired_replicas",
            "max_replicas",
            "live",
            "team_id",
            "model_id",
            "served_model_name",
            "engine_args",
        )
    )
    total = team_total = 0
    for state, desired, maximum, live, row_team, model_id, served, engine_args in rows:
        replicas = max(min(desired, maximum) if state in ASKING_STATES else 0, live)
        if not replicas:
            continue
        gpus = replicas * replica_gpus(model_id=model_id, served_model_name=served, engine_args=engine_args)
        total += gpus
        if team_id is not None and row_team == team_id:
            team_total += gpus
    return total, team_total


def pool_nodes_free(pool: ComputePool) -> int:
    """Nodes of `pool` (its row locked by the caller, its provider loaded) no live replica holds."""
    if _unlimited(pool):
        return REPLICAS_UNBOUNDED
    live = Replica.objects.filter(pool_id=pool.pk, state__in=LIVE_REPLICA_STATES).count()
    return max(pool.max_nodes - live, 0)


def deployment_refusal_record(*, deployment: ModelDeployment, reason: str) -> bool:
    """Record on the deployment's history (its page and `/api/deployments/<id>/events/`) that something it was to
    do was refused, without changing its state; whether it was recorded. The same refusal twice in a row is
    recorded once: the autoscaler and the reconciler ask again every few seconds."""
    reason = reason[:500]
    last = (
        DeploymentEvent.objects.filter(deployment=deployment).order_by("-id").values_list("reason", flat=True).first()
    )
    if last == reason:
        return False
    DeploymentEvent.objects.create(
        deployment=deployment, from_state=deployment.state, to_state=deployment.state, reason=reason
    )
    return True
