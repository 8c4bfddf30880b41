"""Desired against actual: the reconciler (self-healing) and the autoscaler.

`deployment_reconcile_run` makes a deployment's replicas match what it should run: failed replicas are torn down
and replaced, missing ones created, extras removed (those not serving first, then the newest), and the
deployment's state follows (PENDING -> PROVISIONING -> READY <-> DEGRADED; STOPPING -> STOPPED). It runs after every
change and periodically, holds the deployment's row lock while it decides (a second reconcile of the same
deployment skips instead of waiting), and only enqueues the slow work (provision, teardown) after commit.

Replacing a failed replica at once, for ever, turns an engine that cannot start into an endless churn of replicas
(and of money). So replacements back off like Kubernetes' CrashLoopBackOff: the first failure is replaced at once,
each further one in a row doubles the wait before the next replica (INFERIA_REPLICA_BACKOFF_SECONDS up to
INFERIA_REPLICA_BACKOFF_MAX_SECONDS); the count resets once the deployment has been READY for
INFERIA_DEPLOYMENT_FAILURE_RESET_SECONDS; after INFERIA_DEPLOYMENT_MAX_FAILURES in a row with no replica serving, the
deployment goes FAILED with the last error (starting or changing it tries again). While some replicas still serve it
stays DEGRADED and keeps retrying at the capped delay: failing it would take the serving ones out of routing. Stopped
replica rows are kept per deployment up to INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT, for their errors.

`deployment_autoscale_run` moves `desired_replicas` between min and max on queue depth (vLLM's waiting requests)
and KV-cache use, with a cool-down after every change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.compute.capacity import CapacityRefusal, deployment_refusal_record
from apps.compute.enqueue import DEPLOYMENT_RECONCILE, REPLICA_PROVISION, REPLICA_TEARDOWN, task_send
from apps.compute.models import ModelDeployment, Replica
from apps.compute.placement import placement_plan_locked, replicas_by_removal_cost
from apps.compute.replica_states import replica_transition
from apps.compute.replicas import ACTIVE_STATES, PROVISION_LEASE_S
from apps.compute.rollout import (
    deployment_spec_hash,
    draining_done,
    replica_spec_for_new,
    rollout_failures_record_locked,
    rollout_step_locked,
)
from apps.compute.services import State, deployment_scale, deployment_transition_locked

logger = logging.getLogger(__name__)

RState = Replica.State
# Replicas not serving yet, in the order extras are removed: the least far along first.
_REMOVE_ORDER: dict[str, int] = {
    RState.PENDING: 0,
    RState.PROVISIONING: 1,
    RState.STARTING: 2,
    RState.UNHEALTHY: 3,
    RState.READY: 4,
}
# A STOPPING replica that no teardown has touched in this long gets another teardown (its worker died), and a PENDING
# one another provisioning message (it was lost with its worker, or is stuck in a dead worker's unacknowledged
# message until the broker's visibility timeout).
TEARDOWN_RETRY_S = settings.INFERIA_TASK_REQUEUE_SECONDS
STOPPED_KEEP = timedelta(days=1)


@dataclass
class ReconcilePlan:
    """What a reconcile decided; the caller enqueues it after commit."""

    provision: list[int] = field(default_factory=list)
    teardown: list[int] = field(default_factory=list)
    skipped: bool = False


def deployment_reconcile_run(*, deployment_id: int) -> ReconcilePlan:
    """Reconcile one deployment (see the module docstring) and enqueue the provisioning and teardown it needs."""
    with transaction.atomic():
        deployment = ModelDeployment.objects.select_for_update(skip_locked=True).filter(pk=deployment_id).first()
        if deployment is None:  # gone, or another worker is reconciling it right now
            return ReconcilePlan(skipped=True)
        plan = _reconcile_locked(deployment)
        provision, teardown = list(plan.provision), list(plan.teardown)
        transaction.on_commit(lambda: _enqueue(provision, teardown))
    return plan


def _enqueue(provision: list[int], teardown: list[int]) -> None:
    for replica_id in provision:
        task_send(REPLICA_PROVISION, replica_id, raise_errors=True)
    for replica_id in teardown:
        task_send(REPLICA_TEARDOWN, replica_id, raise_errors=True)


def _reconcile_locked(deployment: ModelDeployment) -> ReconcilePlan:
    plan = ReconcilePlan()
    now = timezone.now()
    replicas = list(deployment.replicas.select_for_update().exclude(state=RState.STOPPED).order_by("pk"))
    stopping = [r for r in replicas if r.state == RState.STOPPING]
    # Teardowns a dead worker left half-done run again.
    stale = now - timedelta(seconds=TEARDOWN_RETRY_S)
    plan.teardown += [r.pk for r in stopping if r.updated_at < stale]
    failed = [r for r in replicas if r.state == RState.FAILED]
    active = [r for r in replicas if r.state in ACTIVE_STATES]
    draining = [r for r in replicas if r.state == RState.DRAINING]
    if not deployment.spec_hash:  # from before specs were recorded: what it runs now is its spec
        deployment.spec_hash = deployment_spec_hash(deployment)
        deployment.save(update_fields=["spec_hash"])
    _failures_forget_if_steady(deployment, now)
    if failed:  # self-healing: tear the dead down; the count below replaces them, once its back-off has passed
        _mark_stopping(failed)
        plan.teardown += [r.pk for r in failed]
        if deployment.state not in (State.STOPPING, State.STOPPED, State.FAILED):
            _failures_record(deployment, failed, now)
            rollout_failures_record_locked(deployment, failed)
    # Replicas out of routing that ran their last requests (or ran out of time) stop.
    drained = (
        draining if deployment.state in (State.STOPPING, State.STOPPED) else draining_done(deployment, draining, now)
    )
    _mark_stopping(drained)
    plan.teardown += [r.pk for r in drained]
    if len(drained) < len(draining):  # the next look at those still draining, sooner than the periodic one
        transaction.on_commit(lambda: _enqueue_reconcile_later(deployment.pk, settings.INFERIA_DRAIN_GRACE_SECONDS))

    if deployment.state in (State.STOPPING, State.STOPPED):
        if active:
            _mark_stopping(active)
            plan.teardown += [r.pk for r in active]
        elif not stopping and deployment.state == State.STOPPING:
            deployment_transition_locked(deployment=deployment, to_state=State.STOPPED, reason="all replicas stopped")
        return plan
    if deployment.state == State.FAILED:
        return plan  # waits for a change or a start; failing again and again would only burn money
    if _crash_loop_give_up(deployment, active):
        _mark_stopping(active)  # none serves; those still starting would only fail the same way
        plan.teardown += [r.pk for r in active]
        return plan

    desired = min(deployment.desired_replicas, deployment.max_replicas)
    step = rollout_step_locked(deployment, active, desired)
    if step.stop or step.drain:
        _mark_stopping(step.stop)
        plan.teardown += [r.pk for r in step.stop]
        for replica in step.drain:
            replica_transition(replica=replica, to_state=RState.DRAINING, drain_started_at=now)
        if step.drain:
            transaction.on_commit(lambda: _enqueue_reconcile_later(deployment.pk, settings.INFERIA_DRAIN_GRACE_SECONDS))
        active = [r for r in active if r not in step.stop and r not in step.drain]
    if deployment.rollout_state == ModelDeployment.RolloutState.PROGRESSING:
        # The rollout sizes the deployment: new-spec replicas up to its surge, none removed but by draining.
        _replicas_create(deployment, step.create, active, plan)
    else:
        # A paused rollout keeps the replicas it surged to; outside rollouts the count is the desired one.
        paused = deployment.rollout_state == ModelDeployment.RolloutState.PAUSED
        _replicas_size(deployment, active, desired, plan, allowance=deployment.max_surge if paused else 0)
    _replicas_requeue(active, now, plan)
    _deployment_state_follow(deployment, active, replaced=len(failed), desired=desired)
    _stopped_replicas_prune(deployment)
    return plan


def _replicas_create(deployment: ModelDeployment, count: int, active: list[Replica], plan: ReconcilePlan) -> None:
    """Create `count` replicas (of the spec new ones run now) on the cheapest of the deployment's pools with free
    nodes, as many as they have free nodes for."""
    if count <= 0 or (deployment.replace_after is not None and timezone.now() < deployment.replace_after):
        return  # backing off; `_failures_record` scheduled the reconcile that replaces them
    pools, shortfall = placement_plan_locked(deployment, count)
    if shortfall:
        deployment_refusal_record(deployment=deployment, reason=shortfall)
    spec, spec_digest = replica_spec_for_new(deployment)
    for pool in pools:
        replica = Replica.objects.create(deployment=deployment, pool=pool, spec=spec, spec_hash=spec_digest)
        active.append(replica)
        plan.provision.append(replica.pk)


def _replicas_size(
    deployment: ModelDeployment, active: list[Replica], desired: int, plan: ReconcilePlan, *, allowance: int = 0
) -> None:
    """Remove extras beyond `desired` + `allowance` (those on the most expensive pools first, then the least far
    along, then the newest), create the missing. A serving extra drains first (out of routing, its running streams
    finish, as in a rollout); the others stop at once."""
    if len(active) > desired + allowance:
        extras = replicas_by_removal_cost(active, _REMOVE_ORDER)[: len(active) - desired - allowance]
        serving = [r for r in extras if r.state == RState.READY]
        idle = [r for r in extras if r.state != RState.READY]
        _mark_stopping(idle)
        plan.teardown += [r.pk for r in idle]
        now = timezone.now()
        for replica in serving:
            replica_transition(replica=replica, to_state=RState.DRAINING, drain_started_at=now)
        if serving:
            transaction.on_commit(lambda: _enqueue_reconcile_later(deployment.pk, settings.INFERIA_DRAIN_GRACE_SECONDS))
        for replica in extras:
            active.remove(replica)
    _replicas_create(deployment, desired - len(active), active, plan)


def _replicas_requeue(active: list[Replica], now: datetime, plan: ReconcilePlan) -> None:
    """Pending replicas whose task message was lost, and claims a dead worker left behind."""
    lease = now - timedelta(seconds=PROVISION_LEASE_S)
    plan.provision += [
        r.pk
        for r in active
        if r.pk not in plan.provision
        and (
            (r.state == RState.PENDING and r.updated_at < now - timedelta(seconds=TEARDOWN_RETRY_S))
            or (r.state == RState.PROVISIONING and r.claimed_at is not None and r.claimed_at < lease)
        )
    ]


def replica_backoff_seconds(failures: int) -> float:
    """How long the replacement of a deployment's `failures`-th failed replica in a row waits: none for the first
    (a node that died after serving well is replaced at once), then 10 s, 20 s, 40 s, ... up to 5 minutes (with the
    default settings)."""
    if failures <= 1:
        return 0.0
    base = settings.INFERIA_REPLICA_BACKOFF_SECONDS
    return float(min(base * 2 ** (failures - 2), settings.INFERIA_REPLICA_BACKOFF_MAX_SECONDS))


def _failures_record(deployment: ModelDeployment, failed: list[Replica], now: datetime) -> None:
    latest = max(failed, key=lambda r: (r.updated_at, r.pk))
    deployment.consecutive_failures += len(failed)
    deployment.last_failure_at = now
    deployment.last_error = latest.last_error or "the replica failed"
    deployment.replace_after = now + timedelta(seconds=replica_backoff_seconds(deployment.consecutive_failures))
    deployment.save(update_fields=["consecutive_failures", "last_failure_at", "last_error", "replace_after"])
    wait_s, deployment_id = (deployment.replace_after - now).total_seconds(), deployment.pk
    if wait_s > 0:
        transaction.on_commit(lambda: _enqueue_reconcile_later(deployment_id, wait_s))


def _failures_forget_if_steady(deployment: ModelDeployment, now: datetime) -> None:
    """A deployment READY for the reset window since its last failure starts counting failures afresh."""
    if not deployment.consecutive_failures or deployment.state != State.READY:
        return
    steady = now - timedelta(seconds=settings.INFERIA_DEPLOYMENT_FAILURE_RESET_SECONDS)
    if deployment.state_changed_at <= steady and (deployment.last_failure_at or now) <= steady:
        deployment.consecutive_failures = 0
        deployment.replace_after = None
        deployment.last_error = ""
        deployment.save(update_fields=["consecutive_failures", "replace_after", "last_error"])


def _crash_loop_give_up(deployment: ModelDeployment, active: list[Replica]) -> bool:
    """FAILED after too many failures in a row, unless some replica still serves (then it keeps trying)."""
    failures = deployment.consecutive_failures
    if failures < settings.INFERIA_DEPLOYMENT_MAX_FAILURES or any(r.state == RState.READY for r in active):
        return False
    reason = f"gave up after {failures} replica failures in a row; last: {deployment.last_error}"
    if deployment.state == State.READY:  # the state machine fails a deployment only once it no longer serves
        deployment_transition_locked(deployment=deployment, to_state=State.DEGRADED, reason="no replica serving")
    deployment_transition_locked(deployment=deployment, to_state=State.FAILED, reason=reason)
    return True


def _stopped_replicas_prune(deployment: ModelDeployment) -> None:
    """Keep the newest INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT stopped replicas (their errors), delete older ones."""
    keep = max(settings.INFERIA_DEPLOYMENT_STOPPED_REPLICAS_KEPT, 0)
    old = list(deployment.replicas.filter(state=RState.STOPPED).order_by("-pk").values_list("pk", flat=True)[keep:])
    if old:
        Replica.objects.filter(pk__in=old, state=RState.STOPPED).delete()


def _enqueue_reconcile_later(deployment_id: int, wait_s: float) -> None:
    """The reconcile that starts the replacement once its back-off has passed (the periodic one is the safety net)."""
    task_send(DEPLOYMENT_RECONCILE, deployment_id, countdown=max(wait_s, 0.0))


def _mark_stopping(replicas: list[Replica]) -> None:
    """Out of routing and on to teardown (the caller holds the rows locked, so every move succeeds)."""
    for replica in replicas:
        replica_transition(replica=replica, to_state=RState.STOPPING)


def _deployment_state_follow(
    deployment: ModelDeployment, active: list[Replica], *, replaced: int, desired: int
) -> None:
    """The deployment's state from its replicas: READY when it serves at full size (or is only growing),
    DEGRADED when it serves short of it after losing replicas, PROVISIONING before its first replica is ready."""
    ready = sum(r.state == RState.READY for r in active)
    unhealthy = sum(r.state == RState.UNHEALTHY for r in active)
    current = deployment.state
    if current == State.PENDING:
        deployment_transition_locked(
            deployment=deployment, to_state=State.PROVISIONING, reason=f"provisioning {desired} replica(s)"
        )
        current = State.PROVISIONING
    if desired == 0:
        return
    growing_only = ready > 0 and not unhealthy and not replaced and current == State.READY
    if ready >= desired or growing_only:
        deployment_transition_locked(deployment=deployment, to_state=State.READY, reason=f"{ready}/{desired} ready")
    elif current in (State.READY, State.DEGRADED) or (ready and current == State.PROVISIONING and replaced):
        why = f"{ready}/{desired} ready" + (f", replacing {replaced} failed" if replaced else "")
        why += f", {unhealthy} unhealthy" if unhealthy else ""
        deployment_transition_locked(deployment=deployment, to_state=State.DEGRADED, reason=why)


def deployments_reconcile_all() -> int:
    """Reconcile every deployment that is not at rest (the beat's safety net); how many were looked at."""
    busy = Replica.objects.filter(state__in=[*ACTIVE_STATES, RState.FAILED, RState.DRAINING, RState.STOPPING]).values(
        "deployment_id"
    )
    ids = list(
        ModelDeployment.objects.filter(~Q(state__in=(State.STOPPED, State.FAILED)) | Q(pk__in=busy))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for deployment_id in dict.fromkeys(ids):
        try:
            deployment_reconcile_run(deployment_id=deployment_id)
        except Exception:  # one broken deployment must not stop the others' healing
            logger.exception("reconcile of deployment %s failed", deployment_id)
    Replica.objects.filter(state=RState.STOPPED, updated_at__lt=timezone.now() - STOPPED_KEEP).delete()
    return len(ids)


@dataclass(frozen=True)
class AutoscaleDecision:
    """What the autoscaler decided for one deployment, and why."""

    deployment_id: int
    current: int
    target: int
    reason: str


def deployment_autoscale_run(*, deployment_id: int) -> AutoscaleDecision | None:
    """Scale one deployment up when requests queue (waiting per ready replica at or above
    INFERIA_AUTOSCALE_WAITING_PER_REPLICA) or the KV cache fills (above INFERIA_AUTOSCALE_KV_HIGH), and down by one
    when nothing waits and KV-cache use is low, each no sooner than its cool-down after the last change.
    Reads the load the health checker stored on the replicas. None when nothing changes."""
    deployment = ModelDeployment.objects.filter(pk=deployment_id, state__in=(State.READY, State.DEGRADED)).first()
    if deployment is None or deployment.max_replicas <= deployment.min_replicas:
        return None
    ready = list(deployment.replicas.filter(state=RState.READY).values_list("last_metrics", flat=True))
    if not ready:
        return None
    now = timezone.now()
    waiting = sum(float((metrics or {}).get("waiting", 0) or 0) for metrics in ready)
    running = sum(float((metrics or {}).get("running", 0) or 0) for metrics in ready)
    kv = max(float((metrics or {}).get("kv_cache", 0) or 0) for metrics in ready)
    current = deployment.desired_replicas
    since = now - deployment.last_scaled_at if deployment.last_scaled_at else None

    def cooled(seconds: float) -> bool:
        return since is None or since >= timedelta(seconds=seconds)

    busy = waiting / len(ready) >= settings.INFERIA_AUTOSCALE_WAITING_PER_REPLICA
    full = kv >= settings.INFERIA_AUTOSCALE_KV_HIGH
    idle = waiting == 0 and kv <= settings.INFERIA_AUTOSCALE_KV_LOW
    # Scale up only once the replicas asked for last time serve, so one queue does not add a replica per check.
    if (busy or full) and current < deployment.max_replicas and len(ready) >= current:
        if not cooled(settings.INFERIA_AUTOSCALE_UP_COOLDOWN_SECONDS):
            return None
        target = current + 1
        reason = f"autoscale up: {waiting:.0f} waiting on {len(ready)} replica(s), KV cache {kv:.0%}"
    elif idle and current > deployment.min_replicas and cooled(settings.INFERIA_AUTOSCALE_DOWN_COOLDOWN_SECONDS):
        target = current - 1
        reason = f"autoscale down: nothing waiting, {running:.0f} running, KV cache {kv:.0%}"
    else:
        return None
    try:
        deployment_scale(deployment=deployment, replicas=target, actor=None, reason=reason)
    except CapacityRefusal as refusal:
        with transaction.atomic():
            deployment_refusal_record(deployment=deployment, reason=f"autoscale up refused: {refusal}")
        return None
    return AutoscaleDecision(deployment_id=deployment.pk, current=current, target=target, reason=reason)


def deployments_autoscale_all() -> list[AutoscaleDecision]:
    """Run the autoscaler over every serving deployment that has room to scale."""
    decisions = []
    for deployment_id in ModelDeployment.objects.filter(state__in=(State.READY, State.DEGRADED)).values_list(
        "pk", flat=True
    ):
        try:
            decision = deployment_autoscale_run(deployment_id=deployment_id)
        except Exception:
            logger.exception("autoscaling deployment %s failed", deployment_id)
            continue
        if decision is not None:
            logger.info(
                "deployment %s: %s -> %s (%s)", deployment_id, decision.current, decision.target, decision.reason
            )
            decisions.append(decision)
    return decisions
