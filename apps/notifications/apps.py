from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "apps.notifications"
    label = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        # The domains publish what happened (inferia_runtime/events.py); this app decides whom to tell.
        from apps.notifications.subscribers import subscribers_connect

        subscribers_connect()
