"""A replica's lifecycle on the worker: claim and provision it through its provider's adapter, record what the
adapter returned, tear it down. Every step is a conditional move of the replica's state (`replica_transition`, see
apps/compute/replica_states.py for the states), so two workers never do the same step and a step killed half-way
can run again (adapters are idempotent: see adapters/base.py).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.compute.adapters import AdapterError, ProviderConfigError, UnsupportedProviderError, adapter_for
from apps.compute.engine import EngineArgsError
from apps.compute.models import Replica
from apps.compute.node_tokens import node_token, node_token_hash
from apps.compute.placement import replica_pool_move_after_refusal
from apps.compute.replica_logs import replica_logs_publish
from apps.compute.replica_states import replica_transition
from apps.compute.rollout import spec_apply

logger = logging.getLogger(__name__)

RState = Replica.State
# A provisioning claim older than its lease belongs to a worker that died: the task's hard time limit is shorter, so
# a live run has ended (or been killed) before its claim can be taken over. INFERIA_PROVISION_TIME_LIMIT_SECONDS: slow
# adapters may need longer runs; a shorter limit hands a dead worker's replica to another one sooner.
PROVISION_TIME_LIMIT_S = settings.INFERIA_PROVISION_TIME_LIMIT_SECONDS
PROVISION_SOFT_TIME_LIMIT_S = PROVISION_TIME_LIMIT_S * 5 // 6
PROVISION_LEASE_S = PROVISION_TIME_LIMIT_S * 3 // 2
# Errors that retrying cannot fix: the deployment fails with the reason instead.
PERMANENT_ERRORS = (ProviderConfigError, UnsupportedProviderError, EngineArgsError)
# Replica states in which a replica counts towards its deployment's size.
ACTIVE_STATES = (RState.PENDING, RState.PROVISIONING, RState.STARTING, RState.READY, RState.UNHEALTHY)


def replica_claim_provision(*, replica_id: int) -> bool:
    """Claim `replica_id`'s provisioning for this worker: PENDING, or PROVISIONING under an expired lease (a worker
    died holding it). Exactly one concurrent caller wins."""
    now = timezone.now()
    replica = Replica.objects.filter(pk=replica_id, state__in=(RState.PENDING, RState.PROVISIONING)).first()
    if replica is None:
        return False
    if replica.state == RState.PENDING:
        return replica_transition(replica=replica, to_state=RState.PROVISIONING, claimed_at=now)
    # Taking over a dead worker's claim moves no state: the replica stays PROVISIONING, under a fresh lease.
    stale = now - timedelta(seconds=PROVISION_LEASE_S)
    taken = Replica.objects.filter(pk=replica_id, state=RState.PROVISIONING, claimed_at__lt=stale)
    return taken.update(claimed_at=now, updated_at=now) == 1


@dataclass(frozen=True)
class ProvisionOutcome:
    """What a provisioning run ended in: `retry` when a later attempt may succeed, `moved` when the replica went
    to another pool (a new provisioning run starts it there)."""

    ok: bool
    retry: bool = False
    moved: bool = False
    error: str = ""


def replica_provision_run(*, replica_id: int) -> ProvisionOutcome:
    """Provision a replica this worker has claimed: the adapter starts it (or finds it started), then the replica
    records its endpoint and handle and becomes STARTING; the health checker makes it READY.

    A refusal moves the replica to another of its deployment's pools with room where there is one
    (apps/compute/placement.py). Otherwise a transient failure releases the claim (back to PENDING) for a retry, and
    a permanent one fails the replica and its deployment with the reason."""
    replica = Replica.objects.select_related("deployment", "pool__provider").get(pk=replica_id)
    if replica.spec:
        # The adapters read the deployment: it is made to say what this replica was created to run, which differs
        # while a rollout is under way, paused or failed (apps/compute/rollout.py).
        spec_apply(replica.deployment, replica.spec)
    try:
        result = adapter_for(replica.pool.provider).provision(replica)
    except (AdapterError, EngineArgsError) as error:
        if isinstance(error, AdapterError) and replica_pool_move_after_refusal(replica_id=replica.pk, error=str(error)):
            return ProvisionOutcome(ok=False, moved=True, error=str(error))
        return _provision_refused(replica, error)
    recorded = replica_transition(
        replica=replica,
        from_state=RState.PROVISIONING,
        to_state=RState.STARTING,
        endpoint=result.endpoint,
        provider_handle=result.handle,
        node_token_hash=node_token_hash(node_token(replica)),
        last_error="",
        failed_checks=0,
        claimed_at=None,
    )
    if not recorded:
        # Stopped (or taken over) while the adapter ran: what it started must not stay behind.
        logger.info("replica %s changed while provisioning; tearing down what was started", replica_id)
        replica.provider_handle = result.handle
        adapter_for(replica.pool.provider).teardown(replica)
        return ProvisionOutcome(ok=False, retry=False, error="cancelled")
    replica.provider_handle = result.handle
    replica_logs_publish(replica)  # the engine's first output, on the console's live page
    return ProvisionOutcome(ok=True)


def _provision_refused(replica: Replica, error: Exception) -> ProvisionOutcome:
    """A refusal no other pool takes over: a permanent one fails the replica and its deployment, another releases
    the claim for a retry."""
    from apps.compute.services import State, deployment_transition

    if not isinstance(error, PERMANENT_ERRORS):
        _provision_failed(replica, str(error), state=RState.PENDING)
        return ProvisionOutcome(ok=False, retry=True, error=str(error))
    _provision_failed(replica, str(error), state=RState.FAILED)
    deployment = replica.deployment
    if deployment.state in (State.PENDING, State.PROVISIONING, State.DEGRADED):
        deployment_transition(deployment_id=deployment.pk, to_state=State.FAILED, reason=f"provisioning: {error}")
    return ProvisionOutcome(ok=False, retry=False, error=str(error))


def _provision_failed(replica: Replica, error: str, *, state: str) -> None:
    replica_transition(
        replica=replica, from_state=RState.PROVISIONING, to_state=state, last_error=error[:2000], claimed_at=None
    )


def replica_provision_give_up(*, replica_id: int, error: str) -> None:
    """After the last retry: the replica fails and the reconciler replaces it."""
    replica = Replica.objects.filter(pk=replica_id, state__in=(RState.PENDING, RState.PROVISIONING)).first()
    if replica is not None:
        replica_transition(replica=replica, to_state=RState.FAILED, last_error=f"gave up provisioning: {error}"[:2000])


def replicas_mark_stopping(*, replica_ids: list[int], reason: str) -> list[int]:
    """Move replicas to STOPPING (out of routing) for teardown; returns those that moved. (`reason` goes to the log;
    a replica keeps its own last error.)"""
    if not replica_ids:
        return []
    with transaction.atomic():
        live = (
            Replica.objects.select_for_update()
            .filter(pk__in=replica_ids)
            .exclude(state__in=(RState.STOPPING, RState.STOPPED))
        )
        moved = [replica.pk for replica in live if replica_transition(replica=replica, to_state=RState.STOPPING)]
        if moved:
            logger.info("stopping replicas %s: %s", moved, reason)
    return moved


def replica_teardown_run(*, replica_id: int) -> bool:
    """Tear down a STOPPING replica through its adapter, then mark it STOPPED; whether it did."""
    replica = (
        Replica.objects.select_related("deployment", "pool__provider")
        .filter(pk=replica_id, state=RState.STOPPING)
        .first()
    )
    if replica is None:
        return False
    # The reconcile re-enqueues a STOPPING replica left untouched for INFERIA_TASK_REQUEUE_SECONDS (its worker died):
    # touching it first keeps a teardown that waits for a slow engine from being doubled on every reconcile pass.
    Replica.objects.filter(pk=replica_id, state=RState.STOPPING).update(updated_at=timezone.now())
    # Nothing of ours can be running on a provider we have no adapter for.
    with contextlib.suppress(UnsupportedProviderError):
        adapter_for(replica.pool.provider).teardown(replica)
    replica_transition(replica=replica, to_state=RState.STOPPED)
    return True
