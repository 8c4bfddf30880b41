"""Writes on the compute plane's deployments: the state machine (every transition recorded with its reason), scaling,
stopping and starting, and the demo's simulated deployment. Replica lifecycle lives in `apps/compute/replicas.py`
(its state machine in `apps/compute/replica_states.py`), the health checker in `apps/compute/health.py`,
reconciliation and autoscaling in `apps/compute/reconcile.py`. The worker's tasks (`apps/compute/tasks.py`) call
these; so do the REST API and the CLI.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.compute.capacity import ASKING_STATES, deployment_capacity_check
from apps.compute.enqueue import DEPLOYMENT_RECONCILE, task_send
from apps.compute.events import DeploymentStateChanged
from apps.compute.models import ComputePool, DeploymentEvent, ModelDeployment, Provider
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.events import event_publish

logger = logging.getLogger(__name__)

State = ModelDeployment.State

# The deployment state machine. READY <-> DEGRADED while it serves; STOPPING -> STOPPED when asked to stop; FAILED
# when it cannot be provisioned. STOPPED and FAILED go back to PENDING when started again or changed.
TRANSITIONS: dict[str, frozenset[str]] = {
    State.PENDING: frozenset({State.PROVISIONING, State.STOPPING, State.FAILED}),
    State.PROVISIONING: frozenset({State.READY, State.DEGRADED, State.STOPPING, State.FAILED}),
    State.READY: frozenset({State.DEGRADED, State.STOPPING}),
    State.DEGRADED: frozenset({State.READY, State.STOPPING, State.FAILED}),
    State.STOPPING: frozenset({State.STOPPED}),
    State.STOPPED: frozenset({State.PENDING}),
    State.FAILED: frozenset({State.PENDING, State.STOPPING}),
}


class InvalidTransitionError(DomainRefusal):
    """A state change the deployment state machine does not allow."""


def enqueue_reconcile(deployment_id: int) -> None:
    """Ask the worker to reconcile a deployment now; a lost message is caught by the periodic reconcile."""
    task_send(DEPLOYMENT_RECONCILE, deployment_id)


def deployment_transition_locked(*, deployment: ModelDeployment, to_state: str, reason: str) -> bool:
    """Move `deployment` (a row the caller holds locked) to `to_state`, recording a DeploymentEvent with `reason`.

    Returns False when it already is in that state; raises InvalidTransitionError when the move is not allowed.
    The save announces the change to the gateways (apps/gateway/signals.py)."""
    if deployment.state == to_state:
        return False
    if to_state not in TRANSITIONS[deployment.state]:
        raise InvalidTransitionError(f"a {deployment.state} deployment cannot become {to_state}")
    reason, from_state = reason[:500], deployment.state
    DeploymentEvent.objects.create(deployment=deployment, from_state=from_state, to_state=to_state, reason=reason)
    deployment.state = to_state
    deployment.state_reason = reason
    deployment.state_changed_at = timezone.now()
    fields = ["state", "state_reason", "state_changed_at", "updated_at"]
    if to_state == State.PENDING:  # started or changed again: a fresh try, without the old crash loop's back-off
        deployment.consecutive_failures, deployment.replace_after = 0, None
        fields += ["consecutive_failures", "replace_after"]
    deployment.save(update_fields=fields)
    event_publish(
        DeploymentStateChanged(deployment_id=deployment.pk, from_state=from_state, to_state=to_state, reason=reason)
    )
    return True


@transaction.atomic
def deployment_transition(*, deployment_id: int, to_state: str, reason: str) -> bool:
    """`deployment_transition_locked` for callers that do not hold the row."""
    deployment = ModelDeployment.objects.select_for_update().get(pk=deployment_id)
    return deployment_transition_locked(deployment=deployment, to_state=to_state, reason=reason)


@transaction.atomic
def deployment_scale(
    *,
    deployment: ModelDeployment,
    replicas: int,
    actor: Actor,
    reason: str = "",
    context: AuditContext | None = None,
) -> ModelDeployment:
    """Set how many replicas `deployment` should run (between its min and max); the worker reconciles.

    `actor=None` is the autoscaler. A stopped or failed deployment is started again. More replicas than its pool
    has nodes for, or GPUs past its organisation's or team's quota, are refused (CapacityRefusal)."""
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    if not locked.min_replicas <= replicas <= locked.max_replicas:
        raise DomainRefusal(f"replicas must be from {locked.min_replicas} to {locked.max_replicas}")
    if locked.state == State.STOPPING:
        raise DomainRefusal("the deployment is stopping; start it again once it has stopped")
    if replicas > locked.desired_replicas or locked.state not in ASKING_STATES:
        deployment_capacity_check(deployment=locked, replicas=replicas)
    before = locked.desired_replicas
    locked.desired_replicas = replicas
    locked.last_scaled_at = timezone.now()
    locked.save(update_fields=["desired_replicas", "last_scaled_at", "updated_at"])
    if locked.state in (State.STOPPED, State.FAILED):
        deployment_transition_locked(deployment=locked, to_state=State.PENDING, reason=reason or "scaled")
    audit_record(
        action="deployment.scale",
        actor=actor,
        target=locked,
        changes={"desired_replicas": {"before": before, "after": replicas}, "reason": reason},
        context=context,
    )
    transaction.on_commit(lambda: enqueue_reconcile(locked.pk))
    return locked


@transaction.atomic
def deployment_stop(
    *, deployment: ModelDeployment, actor: Actor, reason: str = "", context: AuditContext | None = None
) -> ModelDeployment:
    """Stop serving `deployment`: it leaves routing at once, the worker tears its replicas down, then STOPPED."""
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    if locked.state in (State.STOPPING, State.STOPPED):
        return locked
    deployment_transition_locked(deployment=locked, to_state=State.STOPPING, reason=reason or "stop requested")
    audit_record(action="deployment.stop", actor=actor, target=locked, changes={"reason": reason}, context=context)
    transaction.on_commit(lambda: enqueue_reconcile(locked.pk))
    return locked


@transaction.atomic
def deployment_start(
    *, deployment: ModelDeployment, actor: Actor, reason: str = "", context: AuditContext | None = None
) -> ModelDeployment:
    """Start a STOPPED (or FAILED) deployment again with its desired replica count."""
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    if locked.state not in (State.STOPPED, State.FAILED):
        raise DomainRefusal(f"a {locked.state} deployment is already started")
    deployment_capacity_check(deployment=locked, replicas=locked.desired_replicas)
    deployment_transition_locked(deployment=locked, to_state=State.PENDING, reason=reason or "start requested")
    audit_record(action="deployment.start", actor=actor, target=locked, changes={"reason": reason}, context=context)
    transaction.on_commit(lambda: enqueue_reconcile(locked.pk))
    return locked


@transaction.atomic
def simulator_deployment_ensure(
    *,
    organization: Organization,
    served_model_name: str,
    model_id: str,
    actor: Actor = None,
    context: AuditContext | None = None,
    replicas: int = 1,
    sim: dict[str, Any] | None = None,
    price_input_per_mtok_micros: int = 0,
    price_output_per_mtok_micros: int = 0,
) -> tuple[ModelDeployment, bool]:
    """A deployment of `organization` served by simulated nodes (a simulator provider and pool, created when
    missing), which the worker provisions like any other. Returns it and whether anything was created; running it
    again changes nothing, except that a stopped or failed deployment is started again."""
    provider, provider_created = Provider.objects.get_or_create(
        organization=organization,
        name="Local simulator",
        defaults={"kind": Provider.Kind.SIMULATOR, "config": {"sim": sim} if sim else {}},
    )
    if provider_created:
        audit_record(action="provider.create", actor=actor, target=provider, changes={"kind": provider.kind})
    pool, pool_created = ComputePool.objects.get_or_create(
        organization=organization,
        name="local-sim",
        defaults={"provider": provider, "region": "local", "gpu_type": "simulated", "max_nodes": max(replicas, 4)},
    )
    if pool_created:
        audit_record(action="pool.create", actor=actor, target=pool, changes={"provider": provider.pk})
    deployment, created = ModelDeployment.objects.get_or_create(
        organization=organization,
        served_model_name=served_model_name,
        defaults={
            "pool": pool,
            "name": served_model_name,
            "model_id": model_id,
            "engine": "inferia-sim",
            "min_replicas": replicas,
            "max_replicas": replicas,
            "desired_replicas": replicas,
            "price_input_per_mtok_micros": price_input_per_mtok_micros,
            "price_output_per_mtok_micros": price_output_per_mtok_micros,
        },
    )
    if created:
        audit_record(
            action="deployment.create",
            actor=actor,
            target=deployment,
            changes={"served_model_name": served_model_name, "model_id": model_id, "pool": pool.pk},
            context=context,
        )
    elif deployment.state in (State.STOPPED, State.FAILED):
        deployment_start(deployment=deployment, actor=actor, reason="demo started", context=context)
    transaction.on_commit(lambda: enqueue_reconcile(deployment.pk))
    return deployment, provider_created or pool_created or created
