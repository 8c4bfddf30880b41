from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "apps.console"
    label = "console"
    verbose_name = "Console"

    def ready(self) -> None:
        from apps.console.live import compute_events_subscribe, knowledge_events_subscribe

        compute_events_subscribe()
        knowledge_events_subscribe()
