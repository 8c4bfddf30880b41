"""The Celery app, configured from Django settings (CELERY_*)."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

app = Celery("inferia")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (
    Queue("default"),
    Queue("provisioning"),
    Queue("health"),
    Queue("usage"),
)
app.conf.task_routes = {
    "apps.compute.tasks.*": {"queue": "provisioning"},
    "apps.compute.tasks.health_*": {"queue": "health"},
    "apps.gateway.tasks.*": {"queue": "usage"},
    "apps.audit.tasks.*": {"queue": "usage"},
}
app.conf.beat_schedule = {}
app.autodiscover_tasks(
    ["apps.orgs", "apps.rbac", "apps.keys", "apps.policies", "apps.compute", "apps.gateway", "apps.audit"]
)

QUEUE_NAMES = [queue.name for queue in app.conf.task_queues]
