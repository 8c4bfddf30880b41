"""The replica state machine: which moves are allowed, and the one function that makes them.

PENDING -> PROVISIONING (claimed by one worker) -> STARTING (the engine is starting) -> READY (answers /health)
<-> UNHEALTHY (missed checks); a transient provisioning error releases the claim (PROVISIONING -> PENDING); a live
replica that dies or cannot start becomes FAILED, which the reconciler tears down and replaces; a READY replica a
rollout replaces or a scale-down removes leaves routing first (DRAINING: it finishes the requests it runs) and then
stops; any live, draining or failed replica can be stopped: STOPPING -> STOPPED, which is final; a replica a provider
refused to provision goes back to PENDING on another pool (apps/compute/placement.py).

Every state change is `replica_transition`: a conditional UPDATE on the state the caller read, so two workers never
make the same move and a replica stopped meanwhile is left alone; it stamps `updated_at` and announces the move
(`ReplicaStateChanged`, after commit) to the gateway's catalog and the console's live page. In the same transaction
it opens the replica's GPU time when it first serves (READY) and closes it when it has stopped (STOPPED): usage
prices that time at the cost per GPU-hour of the pool it runs on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from apps.compute.capacity import replica_gpus
from apps.compute.events import ReplicaStateChanged
from apps.compute.models import ComputePool, ModelDeployment, Provider, Replica
from apps.compute.services import InvalidTransitionError
from apps.usage.gpu_services import gpu_span_close, gpu_span_open
from inferia_runtime.events import event_publish

RState = Replica.State

REPLICA_TRANSITIONS: dict[str, frozenset[str]] = {
    RState.PENDING: frozenset({RState.PROVISIONING, RState.FAILED, RState.STOPPING}),
    RState.PROVISIONING: frozenset({RState.STARTING, RState.PENDING, RState.FAILED, RState.STOPPING}),
    RState.STARTING: frozenset({RState.READY, RState.FAILED, RState.STOPPING}),
    RState.READY: frozenset({RState.UNHEALTHY, RState.FAILED, RState.DRAINING, RState.STOPPING}),
    RState.UNHEALTHY: frozenset({RState.READY, RState.FAILED, RState.STOPPING}),
    RState.DRAINING: frozenset({RState.STOPPING}),
    RState.FAILED: frozenset({RState.STOPPING}),
    RState.STOPPING: frozenset({RState.STOPPED}),
    RState.STOPPED: frozenset(),
}


def replica_transition(*, replica: Replica, to_state: str, from_state: str | None = None, **fields: Any) -> bool:
    """Move `replica` from `from_state` (by default the state it was read in) to `to_state`, writing `fields` with
    it, if it still is in `from_state`; whether it moved. Raises InvalidTransitionError for a move the table does not
    allow; staying in the same state is no move (False, nothing written).

    On a move `replica.state` becomes `to_state` (other fields of the instance are left as read) and
    `ReplicaStateChanged` is published after commit."""
    from_state = replica.state if from_state is None else from_state
    if from_state == to_state:
        return False
    if to_state not in REPLICA_TRANSITIONS[from_state]:
        raise InvalidTransitionError(f"a {from_state} replica cannot become {to_state}")
    now = timezone.now()
    moved = Replica.objects.filter(pk=replica.pk, state=from_state).update(state=to_state, updated_at=now, **fields)
    if not moved:
        return False
    if to_state == RState.READY:
        _gpu_time_start(replica, now)
    elif to_state == RState.STOPPED:
        gpu_span_close(replica_id=replica.pk, at=now)
    replica.state = to_state
    event_publish(
        ReplicaStateChanged(
            deployment_id=replica.deployment_id, replica_id=replica.pk, from_state=from_state, to_state=to_state
        )
    )
    return True


def _gpu_time_start(replica: Replica, now: datetime) -> None:
    """Open the replica's GPU time, charged to its deployment's organisation and team at the price of the pool it
    runs on (servers of an external provider are not Inferia's GPUs)."""
    pool = ComputePool.objects.select_related("provider").only("cost_per_gpu_hour_micros", "provider__kind")
    pool = pool.get(pk=replica.pool_id)
    if pool.provider.kind == Provider.Kind.EXTERNAL:
        return
    deployment = ModelDeployment.objects.only(
        "organization_id", "team_id", "model_id", "served_model_name", "engine_args"
    ).get(pk=replica.deployment_id)
    gpu_span_open(
        replica_id=replica.pk,
        deployment_id=deployment.pk,
        organization_id=deployment.organization_id,
        team_id=deployment.team_id,
        gpus=replica_gpus(
            model_id=deployment.model_id,
            served_model_name=deployment.served_model_name,
            engine_args=deployment.engine_args,
        ),
        cost_per_gpu_hour_micros=pool.cost_per_gpu_hour_micros,
        at=now,
    )
