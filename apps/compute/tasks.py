"""The compute plane's Celery tasks: thin, taking ids, idempotent, each claiming its work before doing it.

Routing (celery_app/app.py): `health_*` run on the `health` queue, the rest on `provisioning`. Messages are
acknowledged late and re-queued when a worker dies (settings CELERY_TASK_ACKS_LATE / REJECT_ON_WORKER_LOST), so a
task killed half-way runs again; the claims and the adapters' idempotence make that safe.
"""

from __future__ import annotations

import logging
import uuid

from celery import shared_task

from apps.compute.enqueue import REPLICA_PROVISION, task_send
from apps.compute.health import replicas_health_check
from apps.compute.load_history import deployment_load_prune
from apps.compute.lora import deployment_lora_sync_run
from apps.compute.reconcile import deployment_reconcile_run, deployments_autoscale_all, deployments_reconcile_all
from apps.compute.replicas import (
    PROVISION_SOFT_TIME_LIMIT_S,
    PROVISION_TIME_LIMIT_S,
    replica_claim_provision,
    replica_provision_give_up,
    replica_provision_run,
    replica_teardown_run,
)
from apps.compute.services import enqueue_reconcile
from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

PROVISION_RETRIES = 5
HEALTH_LOCK = "inferia:compute:health_check"
HEALTH_TIME_LIMIT_S = 30


def _backoff(retries: int) -> int:
    return min(60, 2 ** (retries + 1))  # 2, 4, 8, 16, 32 s


@shared_task(bind=True, acks_late=True, time_limit=PROVISION_TIME_LIMIT_S, soft_time_limit=PROVISION_SOFT_TIME_LIMIT_S)
def replica_provision(self, replica_id: int) -> None:
    """Provision one replica, once: the conditional UPDATE in `replica_claim_provision` lets one run through."""
    if not replica_claim_provision(replica_id=replica_id):
        return  # another worker has it, it is already provisioned, or it was stopped
    outcome = replica_provision_run(replica_id=replica_id)
    if outcome.moved:  # to another pool: a fresh task, with its own retries, starts it there
        task_send(REPLICA_PROVISION, replica_id)
        return
    if outcome.ok or not outcome.retry:
        return
    if self.request.retries >= PROVISION_RETRIES:
        replica_provision_give_up(replica_id=replica_id, error=outcome.error)
        enqueue_reconcile_of_replica(replica_id)
        return
    raise self.retry(countdown=_backoff(self.request.retries), max_retries=PROVISION_RETRIES)


def enqueue_reconcile_of_replica(replica_id: int) -> None:
    """Reconcile the deployment of a replica (after it failed for good, so it is replaced)."""
    from apps.compute.models import Replica

    deployment_id = Replica.objects.filter(pk=replica_id).values_list("deployment_id", flat=True).first()
    if deployment_id is not None:
        enqueue_reconcile(deployment_id)


@shared_task(
    bind=True, acks_late=True, time_limit=120, soft_time_limit=100, max_retries=5, autoretry_for=(Exception,),
    retry_backoff=True,
)  # fmt: skip
def replica_teardown(self, replica_id: int) -> None:
    """Tear down one STOPPING replica (a no-op for any other state, so re-runs are harmless)."""
    replica_teardown_run(replica_id=replica_id)


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50)
def deployment_reconcile(deployment_id: int) -> None:
    """Reconcile one deployment now (after a change)."""
    deployment_reconcile_run(deployment_id=deployment_id)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=280)
def deployment_lora_sync(deployment_id: int) -> None:
    """Load and unload LoRA adapters on a deployment's READY replicas to match its engine arguments (idempotent)."""
    deployment_lora_sync_run(deployment_id=deployment_id)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, expires=30)
def deployment_reconcile_periodic() -> None:
    """The beat's safety net: reconcile every deployment not at rest."""
    deployments_reconcile_all()


@shared_task(acks_late=True, time_limit=60, soft_time_limit=50, expires=30)
def deployment_autoscale() -> None:
    """The beat's autoscaler pass over every deployment with room to scale."""
    deployments_autoscale_all()


@shared_task(time_limit=HEALTH_TIME_LIMIT_S, soft_time_limit=HEALTH_TIME_LIMIT_S - 5, expires=10)
def health_check() -> None:
    """Check every live replica. One run at a time (a Redis lock); a beat that finds one running skips."""
    client = sync_redis()
    token = uuid.uuid4().hex
    if not client.set(HEALTH_LOCK, token, nx=True, ex=HEALTH_TIME_LIMIT_S):
        return
    try:
        replicas_health_check()
    finally:
        if client.get(HEALTH_LOCK) == token.encode():
            client.delete(HEALTH_LOCK)


@shared_task(acks_late=True, time_limit=600, soft_time_limit=580, expires=3000, ignore_result=True)
def load_history_prune() -> int:
    """Delete deployment load samples older than INFERIA_LOAD_HISTORY_DAYS (the beat runs it hourly)."""
    return deployment_load_prune()
