"""The replica state machine: which moves are allowed, and the one function that makes them.

PENDING -> PROVISIONING (claimed by one worker) -> STARTING (the engine is starting) -> READY (answers /health)
<-> UNHEALTHY (missed checks); a transient provisioning error releases the claim (PROVISIONING -> PENDING); a live
replica that dies or cannot start becomes FAILED, which the reconciler tears down and replaces; any live or failed
replica can be stopped: STOPPING -> STOPPED, which is final.

Every state change is `replica_transition`: a conditional UPDATE on the state the caller read, so two workers never
make the same move and a replica stopped meanwhile is left alone; it stamps `updated_at` and announces the move
(`ReplicaStateChanged`, after commit) to the gateway's catalog and the console's live page.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from apps.compute.events import ReplicaStateChanged
from apps.compute.models import Replica
from apps.compute.services import InvalidTransitionError
from inferia_runtime.events import event_publish

RState = Replica.State

REPLICA_TRANSITIONS: dict[str, frozenset[str]] = {
    RState.PENDING: frozenset({RState.PROVISIONING, RState.FAILED, RState.STOPPING}),
    RState.PROVISIONING: frozenset({RState.STARTING, RState.PENDING, RState.FAILED, RState.STOPPING}),
    RState.STARTING: frozenset({RState.READY, RState.FAILED, RState.STOPPING}),
    RState.READY: frozenset({RState.UNHEALTHY, RState.FAILED, RState.STOPPING}),
    RState.UNHEALTHY: frozenset({RState.READY, RState.FAILED, RState.STOPPING}),
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
    moved = Replica.objects.filter(pk=replica.pk, state=from_state).update(
        state=to_state, updated_at=timezone.now(), **fields
    )
    if not moved:
        return False
    replica.state = to_state
    event_publish(
        ReplicaStateChanged(
            deployment_id=replica.deployment_id, replica_id=replica.pk, from_state=from_state, to_state=to_state
        )
    )
    return True
