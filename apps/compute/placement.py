"""Where a deployment's new replicas run: on the cheapest of its pools (`capacity.deployment_pools`: its own pool and
the placement pools a replica fits on) that has a free node, the next cheapest once that one is full. A provider that
refuses to provision a replica moves it to the next such pool it has not refused it on, so one provider out of GPUs
(or misconfigured) does not stall the deployment while another pool has room. Scaling down stops the replicas on the
most expensive pools first (`replicas_by_removal_cost`).

Placement pools are chosen through `deployment_placement_set`, audited like every change of a deployment.
"""

from __future__ import annotations

import logging

from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record
from apps.compute.capacity import (
    deployment_pools,
    deployment_refusal_record,
    pool_fits,
    pool_nodes_free,
    pools_lock,
    replica_gpus,
)
from apps.compute.models import ComputePool, ModelDeployment, Replica
from apps.compute.replica_states import replica_transition
from inferia_runtime.errors import DomainRefusal

logger = logging.getLogger(__name__)

RState = Replica.State

# How many other pools one deployment may name: enough for every region and provider a team uses.
PLACEMENT_POOLS_MAX = 16


def placement_plan_locked(deployment: ModelDeployment, count: int) -> tuple[list[ComputePool], str]:
    """The pools for `count` new replicas of `deployment` (the deployment's row locked), cheapest first, as many as
    have free nodes; and, when fewer fit, why (for the deployment's history). The pools stay locked."""
    pools = pools_lock(deployment_pools(deployment))
    chosen: list[ComputePool] = []
    free_total = 0
    for pool in pools:
        free = pool_nodes_free(pool)
        free_total += free
        chosen += [pool] * min(free, count - len(chosen))
    if len(chosen) == count:
        return chosen, ""
    if len(pools) == 1:
        return chosen, f"pool full: {count} replica(s) to start, {free_total} of {pools[0].max_nodes} node(s) free"
    names = ", ".join(pool.name for pool in pools)
    return chosen, f"pools full: {count} replica(s) to start, {free_total} node(s) free on {names}"


def replicas_by_removal_cost(replicas: list[Replica], state_order: dict[str, int]) -> list[Replica]:
    """`replicas` in the order a scale-down stops them: those on the most expensive pools first, then the least far
    along (`state_order`), then the newest."""
    costs = dict(
        ComputePool.objects.filter(pk__in={r.pool_id for r in replicas}).values_list("pk", "cost_per_gpu_hour_micros")
    )
    return sorted(replicas, key=lambda r: (-costs.get(r.pool_id, 0), state_order[r.state], -r.pk))


def replica_pool_move_after_refusal(*, replica_id: int, error: str) -> bool:
    """After the provider of a PROVISIONING replica's pool refused it: move it (back to PENDING, for a new
    provisioning task) to the cheapest other pool of its deployment that has a free node and has not refused it;
    whether it moved. The refusal and the move are recorded on the deployment's history."""
    with transaction.atomic():
        deployment_id = Replica.objects.filter(pk=replica_id).values_list("deployment_id", flat=True).first()
        if deployment_id is None:
            return False
        deployment = ModelDeployment.objects.select_for_update().get(pk=deployment_id)  # the one lock order
        replica = Replica.objects.select_for_update().select_related("pool").get(pk=replica_id)
        if replica.state != RState.PROVISIONING:
            return False
        refused = sorted({*replica.pools_refused, replica.pool_id})
        pools = [pool for pool in deployment_pools(deployment) if pool.pk not in refused]
        if not pools:
            return False
        candidates = {pool.pk for pool in pools}
        pools = [pool for pool in pools_lock([*pools, replica.pool]) if pool.pk in candidates]
        target = next((pool for pool in pools if pool_nodes_free(pool) > 0), None)
        if target is None:
            return False
        moved = replica_transition(
            replica=replica,
            from_state=RState.PROVISIONING,
            to_state=RState.PENDING,
            pool=target,
            pools_refused=refused,
            last_error=error[:2000],
            claimed_at=None,
        )
        if moved:
            deployment_refusal_record(
                deployment=deployment,
                reason=f"pool {replica.pool.name!r} refused replica {replica.pk} ({error}); "
                f"trying pool {target.name!r}",
            )
            logger.info("replica %s: pool %s refused it; moved to pool %s", replica.pk, replica.pool_id, target.pk)
        return moved


@transaction.atomic
def deployment_placement_set(
    *, deployment: ModelDeployment, pools: list[ComputePool], actor: Actor, context: AuditContext | None = None
) -> ModelDeployment:
    """Set the other pools `deployment`'s replicas may be placed on (its own pool stays first in line at equal
    cost). Each must belong to the deployment's owner, run on a provider Inferia starts nodes on, and fit a replica
    (`capacity.pool_fits`). Replicas already running stay where they are."""
    deployment = ModelDeployment.objects.select_for_update().select_related("pool__provider").get(pk=deployment.pk)
    pools = list({pool.pk: pool for pool in pools if pool.pk != deployment.pool_id}.values())
    if len(pools) > PLACEMENT_POOLS_MAX:
        raise DomainRefusal(f"a deployment can name at most {PLACEMENT_POOLS_MAX} placement pools")
    gpus = replica_gpus(
        model_id=deployment.model_id, served_model_name=deployment.served_model_name, engine_args=deployment.engine_args
    )
    for pool in pools:
        if pool.organization_id != deployment.organization_id:
            raise DomainRefusal(f"pool {pool.name!r} belongs to another owner")
        if not pool_fits(pool, own=deployment.pool, gpus=gpus):
            raise DomainRefusal(
                f"pool {pool.name!r} cannot hold a replica of this deployment: it needs {gpus} GPU(s) per node"
                + (f" of type {deployment.pool.gpu_type}" if deployment.pool.gpu_type else "")
                + " on a provider whose nodes Inferia starts"
            )
    before = sorted(deployment.placement_pools.values_list("pk", flat=True))
    deployment.placement_pools.set(pools)
    after = sorted(pool.pk for pool in pools)
    if before != after:
        audit_record(
            action="deployment.placement",
            actor=actor,
            target=deployment,
            changes=audit_diff(before={"placement_pools": before}, after={"placement_pools": after}),
            context=context,
        )
    return deployment
