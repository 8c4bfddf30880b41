"""Asking the worker to act on the fleet. Tasks are sent by their registered names, so the modules that decide what
to do (services, reconcile, LoRA) never import the task module, which imports them to do it.

A send that fails (the broker is down) is logged, not raised: the beat's periodic reconcile picks the change up."""

from __future__ import annotations

import logging

from celery import current_app

logger = logging.getLogger(__name__)

DEPLOYMENT_RECONCILE = "apps.compute.tasks.deployment_reconcile"
DEPLOYMENT_LORA_SYNC = "apps.compute.tasks.deployment_lora_sync"
REPLICA_PROVISION = "apps.compute.tasks.replica_provision"
REPLICA_TEARDOWN = "apps.compute.tasks.replica_teardown"
TASKS = (DEPLOYMENT_RECONCILE, DEPLOYMENT_LORA_SYNC, REPLICA_PROVISION, REPLICA_TEARDOWN)


def task_send(name: str, object_id: int, *, countdown: float | None = None, raise_errors: bool = False) -> None:
    """Queue the task `name` for `object_id` (after `countdown` seconds); routed like any call of it."""
    try:
        current_app.send_task(name, args=(object_id,), countdown=countdown)
    except Exception:
        if raise_errors:
            raise
        logger.warning("could not enqueue %s of %s", name.rsplit(".", 1)[-1], object_id, exc_info=True)
