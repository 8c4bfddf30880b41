"""Rolling updates of a deployment: a change of what its replicas run (model, engine arguments, image) replaces them
a few at a time, like a Kubernetes Deployment, without dropping a request.

What a replica runs is its *spec* (`deployment_spec`), named by a short digest (`spec_hash`) kept on the deployment
(what it should run) and on each replica (what it was started with; `Replica.spec` pins it, so a replacement started
while a rollout is paused or failed runs the old spec). LoRA adapters are not part of the spec: they load into running
engines (apps/compute/lora.py).

A change of spec starts a rollout (PROGRESSING). Each reconcile (apps/compute/reconcile.py, under the deployment's row
lock, so every step is idempotent and a killed worker's step is simply taken again) calls `rollout_step_locked`:
new-spec replicas are created up to `max_surge` above the desired count; old replicas not serving are stopped at once;
old READY replicas leave routing (DRAINING, which the gateway's catalog skips: it routes READY only) only while the
READY replicas left number at least desired - `max_unavailable`; a new replica takes traffic only once the health
checker has made it READY. A draining replica is stopped once the health checker saw it run nothing after it left
routing, or after the deployment's `drain_timeout_s` (`draining_done`). When every replica runs the new spec and the
desired count is READY the rollout is COMPLETE.

New-spec replicas that fail INFERIA_ROLLOUT_MAX_FAILURES times fail the rollout (FAILED), not the deployment: the new
spec's replicas that do not serve are stopped and the old ones keep serving (replacements run the old spec). So does a
rollout that makes no progress (no new-spec replica becoming READY, no old one going) for the deployment's
`rollout_deadline_s`, like Kubernetes' progressDeadlineSeconds: a replica stuck starting does not stall it forever.
Each change of a rollout's state is announced (`DeploymentRolloutChanged`) for the console's live page. A rollout
can be paused (nothing more is rolled; replacements run the old spec), resumed, and rolled back: a rollback is a rollout
back to the spec before (`rollout_previous`). Every step is audited (the system's steps with no actor).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.compute.events import DeploymentRolloutChanged
from apps.compute.models import DeploymentEvent, ModelDeployment, Replica
from apps.compute.services import InvalidTransitionError, enqueue_reconcile
from inferia_runtime.errors import DomainRefusal
from inferia_runtime.events import event_publish

RState = Replica.State
Rollout = ModelDeployment.RolloutState
SPEC_FIELDS = ("model_id", "engine_args", "image")
# Replicas still rolling: a rollout in one of these states decides which spec the next replica runs.
_UNFINISHED = (Rollout.PROGRESSING, Rollout.PAUSED, Rollout.FAILED)


def deployment_spec(deployment: ModelDeployment) -> dict[str, Any]:
    """What a replica of `deployment` runs: its model, engine arguments (without the LoRA adapters, which load into
    running engines) and image."""
    args = {key: value for key, value in (deployment.engine_args or {}).items() if key != "lora_modules"}
    return {"model_id": deployment.model_id, "engine_args": args, "image": deployment.image}


def spec_hash(spec: dict[str, Any]) -> str:
    """The short digest that names a spec (equal specs, equal digests, whatever the key order)."""
    encoded = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def spec_apply(deployment: ModelDeployment, spec: dict[str, Any]) -> None:
    """Set `deployment`'s (in-memory) model, engine arguments and image to `spec`, keeping its LoRA adapters."""
    args = dict(spec.get("engine_args") or {})
    modules = (deployment.engine_args or {}).get("lora_modules")
    if modules:
        args["lora_modules"] = modules
    deployment.model_id = str(spec.get("model_id") or deployment.model_id)
    deployment.engine_args = args
    deployment.image = str(spec.get("image") or "")


def replica_spec_for_new(deployment: ModelDeployment) -> tuple[dict[str, Any], str]:
    """The spec (and its digest) a replica created now runs: the deployment's own, except while a rollout is paused or
    failed, when replacements run the spec the serving replicas run."""
    if deployment.rollout_state in (Rollout.PAUSED, Rollout.FAILED) and deployment.rollout_previous:
        previous = deployment.rollout_previous
        return previous["spec"], previous["hash"]
    return deployment_spec(deployment), deployment_spec_hash(deployment)


def deployment_spec_hash(deployment: ModelDeployment) -> str:
    """`deployment.spec_hash`, computed (and kept in memory) if it has none yet."""
    if not deployment.spec_hash:
        deployment.spec_hash = spec_hash(deployment_spec(deployment))
    return deployment.spec_hash


def replica_spec_hash(replica: Replica, deployment: ModelDeployment) -> str:
    """The spec a replica runs; one from before specs were recorded runs its deployment's."""
    return replica.spec_hash or deployment_spec_hash(deployment)


# ---- starting, pausing, resuming and rolling back (the services the REST API, console and CLI call) ----


def deployment_rollout_begin_locked(
    *, deployment: ModelDeployment, before: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> bool:
    """After a change of `deployment` (a row the caller holds locked and has saved) from the spec `before`: start a
    rollout if its spec changed and it runs replicas; whether one started. A rollout superseded before it ended keeps
    the spec it started from as the one to roll back to (that is what its old replicas run)."""
    before_hash = deployment.spec_hash or spec_hash(before)
    after = deployment_spec(deployment)
    after_hash = spec_hash(after)
    if after_hash == before_hash:
        if not deployment.spec_hash:
            deployment.spec_hash = after_hash
            deployment.save(update_fields=["spec_hash"])
        return False
    running = deployment.replicas.exclude(state__in=(RState.STOPPING, RState.STOPPED)).exists()
    fields = ["spec_hash", "rollout_state", "rollout_reason", "rollout_previous", "rollout_failures"]
    deployment.spec_hash = after_hash
    if not running:  # nothing to roll: the next replicas start with the new spec
        deployment.rollout_state, deployment.rollout_reason, deployment.rollout_failures = Rollout.NONE, "", 0
        deployment.rollout_previous = {}
        deployment.save(update_fields=fields)
        return False
    if not (deployment.rollout_state in _UNFINISHED and deployment.rollout_previous):
        deployment.rollout_previous = {"spec": before, "hash": before_hash}
    changed = [name for name in SPEC_FIELDS if before.get(name) != after.get(name)]
    _rollout_set(deployment, Rollout.PROGRESSING, f"{', '.join(changed)} changed", fields)
    audit_record(
        action="deployment.rollout.start",
        actor=actor,
        target=deployment,
        changes={"spec_hash": {"before": before_hash, "after": after_hash}, "changed": changed},
        context=context,
    )
    return True


# The rollout state machine. A new spec (or a rollback) starts a rollout again from any state.
ROLLOUT_TRANSITIONS: dict[str, frozenset[str]] = {
    Rollout.NONE: frozenset({Rollout.PROGRESSING}),
    Rollout.PROGRESSING: frozenset({Rollout.PROGRESSING, Rollout.PAUSED, Rollout.COMPLETE, Rollout.FAILED}),
    Rollout.PAUSED: frozenset({Rollout.PROGRESSING, Rollout.FAILED}),
    Rollout.COMPLETE: frozenset({Rollout.PROGRESSING}),
    Rollout.FAILED: frozenset({Rollout.PROGRESSING}),
}


def _rollout_set(deployment: ModelDeployment, state: str, reason: str, fields: list[str] | None = None) -> None:
    """Move the rollout (the deployment's row locked) and record the step on the deployment's history."""
    if state not in ROLLOUT_TRANSITIONS[deployment.rollout_state]:
        raise InvalidTransitionError(f"a {deployment.rollout_state or 'absent'} rollout cannot become {state}")
    DeploymentEvent.objects.create(
        deployment=deployment,
        from_state=deployment.state,
        to_state=deployment.state,
        reason=f"rollout {state}: {reason}"[:500],
    )
    deployment.rollout_state, deployment.rollout_reason = state, reason[:500]
    fields = list(fields or ["rollout_state", "rollout_reason"])
    if state == Rollout.PROGRESSING:
        deployment.rollout_failures, deployment.rollout_started_at = 0, timezone.now()
        # A fresh spec gets a fresh try, without the back-off of the last one's failures; its deadline runs from now.
        deployment.consecutive_failures, deployment.replace_after = 0, None
        deployment.rollout_progressed_at, deployment.rollout_mark = deployment.rollout_started_at, ""
        fields += [
            "rollout_failures",
            "rollout_started_at",
            "consecutive_failures",
            "replace_after",
            "rollout_progressed_at",
            "rollout_mark",
        ]
    deployment.save(update_fields=[*dict.fromkeys([*fields, "rollout_state", "rollout_reason", "updated_at"])])
    event_publish(DeploymentRolloutChanged(deployment_id=deployment.pk, state=state, reason=deployment.rollout_reason))


def _rollout_command(
    *, deployment: ModelDeployment, allowed: tuple[str, ...], to_state: str, action: str, actor: Actor,
    reason: str, context: AuditContext | None,
) -> ModelDeployment:  # fmt: skip
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    if locked.rollout_state not in allowed:
        shown = locked.rollout_state or "no"
        raise DomainRefusal(f"the deployment has {shown} rollout; this needs one that is {' or '.join(allowed)}")
    before = locked.rollout_state
    _rollout_set(locked, to_state, reason or action.rsplit(".", 1)[-1] + " requested")
    audit_record(
        action=action,
        actor=actor,
        target=locked,
        changes={"rollout_state": {"before": before, "after": to_state}, "reason": reason},
        context=context,
    )
    transaction.on_commit(lambda: enqueue_reconcile(locked.pk))
    return locked


@transaction.atomic
def deployment_rollout_pause(
    *, deployment: ModelDeployment, actor: Actor, reason: str = "", context: AuditContext | None = None
) -> ModelDeployment:
    """Hold a rollout where it is: no more replicas are replaced (replacements of failed ones run the old spec)."""
    return _rollout_command(
        deployment=deployment, allowed=(Rollout.PROGRESSING,), to_state=Rollout.PAUSED,
        action="deployment.rollout.pause", actor=actor, reason=reason, context=context,
    )  # fmt: skip


@transaction.atomic
def deployment_rollout_resume(
    *, deployment: ModelDeployment, actor: Actor, reason: str = "", context: AuditContext | None = None
) -> ModelDeployment:
    """Carry on with a paused rollout."""
    return _rollout_command(
        deployment=deployment, allowed=(Rollout.PAUSED,), to_state=Rollout.PROGRESSING,
        action="deployment.rollout.resume", actor=actor, reason=reason, context=context,
    )  # fmt: skip


@transaction.atomic
def deployment_rollout_rollback(
    *, deployment: ModelDeployment, actor: Actor, reason: str = "", context: AuditContext | None = None
) -> ModelDeployment:
    """Roll back to the spec before the last rollout (itself a rollout, which the old replicas already satisfy): the
    deployment's model, engine arguments and image become that spec's again, the new spec's replicas drain away."""
    locked = ModelDeployment.objects.select_for_update().get(pk=deployment.pk)
    previous = locked.rollout_previous
    if locked.rollout_state == Rollout.NONE or not previous:
        raise DomainRefusal("the deployment has no rollout to roll back")
    current, current_hash = deployment_spec(locked), deployment_spec_hash(locked)
    spec_apply(locked, previous["spec"])
    locked.spec_hash = previous["hash"]
    locked.rollout_previous = {"spec": current, "hash": current_hash}
    fields = ["model_id", "engine_args", "image", "spec_hash", "rollout_previous"]
    _rollout_set(locked, Rollout.PROGRESSING, reason or f"rollback to {previous['hash']}", fields)
    audit_record(
        action="deployment.rollout.rollback",
        actor=actor,
        target=locked,
        changes={"spec_hash": {"before": current_hash, "after": previous["hash"]}, "reason": reason},
        context=context,
    )
    transaction.on_commit(lambda: enqueue_reconcile(locked.pk))
    return locked


# ---- the reconciler's steps (called from apps/compute/reconcile.py with the rows locked) ----


@dataclass
class RolloutStep:
    """What one reconcile of a rolling deployment decided: replicas to stop at once, READY ones to drain, how many
    new-spec replicas to create."""

    stop: list[Replica] = field(default_factory=list)
    drain: list[Replica] = field(default_factory=list)
    create: int = 0


def rollout_failures_record_locked(deployment: ModelDeployment, failed: list[Replica]) -> None:
    """Count failed replicas of a rolling spec; past INFERIA_ROLLOUT_MAX_FAILURES the rollout fails (the old replicas
    keep serving, and replacements run their spec)."""
    if deployment.rollout_state not in (Rollout.PROGRESSING, Rollout.PAUSED):
        return
    target = deployment_spec_hash(deployment)
    new_failed = [r for r in failed if replica_spec_hash(r, deployment) == target]
    if not new_failed:
        return
    deployment.rollout_failures += len(new_failed)
    deployment.save(update_fields=["rollout_failures"])
    if deployment.rollout_failures < settings.INFERIA_ROLLOUT_MAX_FAILURES:
        return
    error = (new_failed[-1].last_error or "the replica failed")[:300]
    _rollout_fail(deployment, f"{deployment.rollout_failures} replicas of the new spec failed; last: {error}", target)


def _rollout_fail(deployment: ModelDeployment, reason: str, target: str) -> None:
    _rollout_set(deployment, Rollout.FAILED, reason)
    # The back-off was the new spec's; the old spec's replacements start at once.
    deployment.consecutive_failures, deployment.replace_after = 0, None
    deployment.save(update_fields=["consecutive_failures", "replace_after"])
    audit_record(action="deployment.rollout.fail", target=deployment, changes={"spec_hash": target, "reason": reason})


def rollout_step_locked(deployment: ModelDeployment, active: list[Replica], desired: int) -> RolloutStep:
    """One step of a rollout (see the module docstring). `active` are the live replicas, draining ones left out."""
    step = RolloutStep()
    target = deployment_spec_hash(deployment)
    new = [r for r in active if replica_spec_hash(r, deployment) == target]
    old = [r for r in active if replica_spec_hash(r, deployment) != target]
    if deployment.rollout_state == Rollout.FAILED:
        # The new spec does not start: its replicas that do not serve go, the old spec fills the count.
        step.stop = [r for r in new if r.state != RState.READY]
        return step
    if deployment.rollout_state != Rollout.PROGRESSING:
        return step
    new_ready = sum(r.state == RState.READY for r in new)
    if not old and new_ready >= desired:
        _rollout_set(deployment, Rollout.COMPLETE, f"{new_ready}/{desired} replicas run {target}")
        audit_record(action="deployment.rollout.complete", target=deployment, changes={"spec_hash": target})
        return step
    if _rollout_stalled(deployment, mark=f"{new_ready}/{len(old)}"):
        reason = f"no progress in {deployment.rollout_deadline_s:g} s: {new_ready}/{desired} replicas run {target}"
        _rollout_fail(deployment, reason, target)
        step.stop = [r for r in new if r.state != RState.READY]
        return step
    surge, unavailable = deployment.max_surge, deployment.max_unavailable
    if surge == 0 and unavailable == 0:  # refused on input; a rollout must be able to move
        unavailable = 1
    # Old replicas that do not serve add nothing to what is available: they go at once.
    step.stop = [r for r in old if r.state != RState.READY]
    old_ready = [r for r in old if r.state == RState.READY]
    spare = new_ready + len(old_ready) - max(desired - unavailable, 0)
    step.drain = old_ready[: max(spare, 0)]  # oldest first
    # Draining replicas no longer count: the surge is over the replicas that serve or are on their way to.
    live = len(active) - len(step.stop) - len(step.drain)
    step.create = max(0, min(desired - len(new), desired + surge - live))
    return step


def _rollout_stalled(deployment: ModelDeployment, *, mark: str) -> bool:
    """Whether the rollout went past its deadline without progress; `mark` is its progress now (a change is
    progress, and restarts the deadline)."""
    now = timezone.now()
    if mark != deployment.rollout_mark or deployment.rollout_progressed_at is None:
        deployment.rollout_mark, deployment.rollout_progressed_at = mark, now
        deployment.save(update_fields=["rollout_mark", "rollout_progressed_at"])
        return False
    return (now - deployment.rollout_progressed_at).total_seconds() > deployment.rollout_deadline_s


def draining_done(deployment: ModelDeployment, draining: list[Replica], now: datetime) -> list[Replica]:
    """Draining replicas that may stop: those the health checker saw run nothing since every gateway stopped routing
    to them (INFERIA_DRAIN_GRACE_SECONDS after they left routing), and those past the deployment's drain timeout."""
    grace = settings.INFERIA_DRAIN_GRACE_SECONDS
    done = []
    for replica in draining:
        since = replica.drain_started_at or replica.updated_at
        age = (now - since).total_seconds()
        metrics = replica.last_metrics or {}
        seen_idle = (
            float(metrics.get("checked_at", 0) or 0) >= since.timestamp() + grace
            and not float(metrics.get("running", 0) or 0)
            and not float(metrics.get("waiting", 0) or 0)
        )
        if age >= deployment.drain_timeout_s or (age >= grace and seen_idle):
            done.append(replica)
    return done


def rollout_progress(
    deployment: ModelDeployment, *, replicas: Iterable[tuple[str, str]] | None = None
) -> dict[str, Any]:
    """A rollout's progress for the API and the console: its state, the spec rolled to and from, and the live replicas
    that run it and that do not (each by state). `replicas` (state, spec digest) saves the query when the caller has
    read them."""
    target = deployment_spec_hash(deployment)
    counts: dict[str, dict[str, int]] = {"new": {}, "old": {}}
    if replicas is None:
        replicas = deployment.replicas.exclude(state=RState.STOPPED).values_list("state", "spec_hash")
    live = [(state, replica_hash) for state, replica_hash in replicas if state != RState.STOPPED]
    for state, replica_hash in live:
        side = counts["new" if (replica_hash or target) == target else "old"]
        side[state] = side.get(state, 0) + 1
    return {
        "state": deployment.rollout_state,
        "reason": deployment.rollout_reason,
        "spec_hash": target,
        "previous_spec_hash": (deployment.rollout_previous or {}).get("hash", ""),
        "started_at": deployment.rollout_started_at.isoformat() if deployment.rollout_started_at else None,
        "failures": deployment.rollout_failures,
        "new_replicas": counts["new"],
        "old_replicas": counts["old"],
    }
