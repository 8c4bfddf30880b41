from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "apps.compute"
    label = "compute"
    verbose_name = "Compute"

    def ready(self) -> None:
        # Every process that enqueues tasks (the web process after an API write, above all) must send them through
        # the configured Celery app: without it, `.delay()` uses Celery's default app, whose messages go to a queue no
        # worker consumes. Done here rather than in the project package's __init__, so that the `inferia` CLI's
        # remote verbs start without importing Celery.
        import celery_app.app  # noqa: F401
