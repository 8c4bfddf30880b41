"""The Celery app, configured from Django settings (CELERY_*)."""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import after_setup_logger
from django.conf import settings
from kombu import Queue

from inferia_runtime.env import env_float

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
}
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
    # The audit record of keys that expired or whose rotation grace ended (the gateways refuse them at once).
    "key-ends-record": {"task": "apps.keys.tasks.api_key_ends_record_periodic", "schedule": 60.0},
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
