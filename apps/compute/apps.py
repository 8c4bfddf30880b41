from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "apps.compute"
    label = "compute"
    verbose_name = "Compute"

    def ready(self) -> None:
        # Every process that enqueues compute tasks (the web process after an API write, above all) must send them
        # through the configured Celery app: without it, `.delay()` uses Celery's default app, whose messages go to
        # a `celery` queue no worker consumes (task_routes live in celery_app/app.py). Django's usual place for this
        # import is the project package's __init__; until it is there, the compute app makes sure of it.
        import celery_app.app  # noqa: F401
