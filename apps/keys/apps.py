from __future__ import annotations

from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "apps.keys"
    label = "keys"
    verbose_name = "API keys"
