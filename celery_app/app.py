"""The Celery app, configured from Django settings (CELERY_*)."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, task_postrun, task_prerun
from django.conf import settings
from kombu import Queue

from inferia_runtime.env import env_float
from inferia_runtime.log_context import LogContextFilter, json_formatter, log_context_bind, log_context_reset

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

app = Celery("inferia")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (
    Queue("default"),
    Queue("provisioning"),
    Queue("health"),
    Queue("usage"),
    Queue("knowledge"),
)
app.conf.task_routes = {
    # Celery takes the first matching pattern: the narrower health route must come first.
    "apps.compute.tasks.health_*": {"queue": "health"},
    "apps.compute.tasks.*": {"queue": "provisioning"},
    "apps.usage.tasks.*": {"queue": "usage"},
    "apps.audit.tasks.*": {"queue": "usage"},
    "apps.policies.tasks.*": {"queue": "usage"},
    # Ingestion runs long (a large file embeds for minutes): its own queue keeps it from delaying provisioning.
    "apps.knowledge.tasks.*": {"queue": "knowledge"},
    "apps.notifications.tasks.*": {"queue": "default"},
}
# However many beats run, one sends the schedule (celery_app.beat_lock).
app.conf.beat_scheduler = "celery_app.beat_lock:LeasedScheduler"
app.conf.beat_schedule = {
    # A copy of the audit chain head outside the event table, so deleting the newest events is detected.
    "audit-checkpoint": {"task": "apps.audit.tasks.audit_checkpoint_periodic", "schedule": 300.0},
    # The gateway's usage events: from the Redis stream into UsageRecord and hourly rollups.
    "usage-flush": {"task": "apps.usage.tasks.usage_flush", "schedule": 2.0},
    "usage-prune": {"task": "apps.usage.tasks.usage_prune", "schedule": 3600.0},
    # Captured prompts and answers past their organisation's retention.
    "usage-captures-prune": {"task": "apps.usage.tasks.usage_captures_prune", "schedule": 3600.0},
    # Rebuild day/month quota and budget counters from UsageRecord if Redis lost them.
    "policy-counters-reconcile": {"task": "apps.policies.tasks.policy_counters_reconcile_periodic", "schedule": 60.0},
    # The same at once after a Redis failover, which may have lost the counters' latest writes.
    "policy-counters-failover": {"task": "apps.policies.tasks.policy_counters_failover_check", "schedule": 2.0},
    # The audit record of keys that expired or whose rotation grace ended (the gateways refuse them at once).
    "key-ends-record": {"task": "apps.keys.tasks.api_key_ends_record_periodic", "schedule": 60.0},
    # Notices of what an organisation asked to hear about (apps/notifications), each announced once.
    "keys-expiring-announce": {"task": "apps.keys.tasks.api_keys_expiring_announce_periodic", "schedule": 3600.0},
    "budget-thresholds-announce": {
        "task": "apps.policies.tasks.budget_thresholds_announce_periodic",
        "schedule": 60.0,
    },
    # The compute plane: health checks (/health, /metrics into Redis), self-healing reconcile, autoscaling.
    "compute-health-check": {
        "task": "apps.compute.tasks.health_check",
        "schedule": env_float("INFERIA_HEALTH_INTERVAL_SECONDS", 2.0),
    },
    # Knowledge files whose ingestion worker died mid-file: another worker takes them over.
    "knowledge-ingestion-resume": {"task": "apps.knowledge.tasks.store_files_resume", "schedule": 30.0},
    "compute-load-history-prune": {"task": "apps.compute.tasks.load_history_prune", "schedule": 3600.0},
    "compute-reconcile": {
        "task": "apps.compute.tasks.deployment_reconcile_periodic",
        "schedule": env_float("INFERIA_RECONCILE_INTERVAL_SECONDS", 5.0),
    },
    "compute-autoscale": {
        "task": "apps.compute.tasks.deployment_autoscale",
        "schedule": env_float("INFERIA_AUTOSCALE_INTERVAL_SECONDS", 5.0),
    },
}
app.autodiscover_tasks(
    [
        "apps.orgs",
        "apps.rbac",
        "apps.keys",
        "apps.policies",
        "apps.compute",
        "apps.audit",
        "apps.usage",
        "apps.knowledge",
        "apps.notifications",
    ]
)

QUEUE_NAMES = [queue.name for queue in app.conf.task_queues]


@after_setup_logger.connect
def _quiet_periodic_chatter(**_: object) -> None:
    """Beat fires the usage flush every two seconds; logging each send, receipt and success at INFO would bury
    everything else. They stay visible with INFERIA_LOG_LEVEL=DEBUG."""
    if settings.LOG_LEVEL != "DEBUG":
        for name in ("celery.beat", "celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    """Celery sets up its own handlers: they write INFERIA_LOG_FORMAT's format and carry the task's context."""
    for handler in logger.handlers:
        handler.addFilter(LogContextFilter())
        if settings.LOG_FORMAT == "json":
            handler.setFormatter(json_formatter())


_task_contexts: dict[str, object] = {}


@task_prerun.connect
def _task_context_bind(task_id: str, task: object, args: tuple = (), kwargs: dict | None = None, **_: object) -> None:
    """Every line a task logs says which task (and, for the compute plane's, which deployment or replica)."""
    try:
        named = inspect.signature(task.run).bind_partial(*args, **(kwargs or {})).arguments  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        named = {}
    _task_contexts[task_id] = log_context_bind(
        task_id=task_id,
        task=getattr(task, "name", ""),
        deployment=named.get("deployment_id"),
        replica=named.get("replica_id"),
    )


@task_postrun.connect
def _task_context_reset(task_id: str, **_: object) -> None:
    token = _task_contexts.pop(task_id, None)
    if token is not None:
        with contextlib.suppress(ValueError):  # a pool that ran the task in another context: nothing to undo here
            log_context_reset(token)  # type: ignore[arg-type]
