from __future__ import annotations

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "apps.gateway"
    label = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from apps.gateway import signals  # connects the catalog invalidation receivers

        signals.compute_events_subscribe()

        from apps.gateway.knowledge_caller import GatewayKnowledgeCaller
        from apps.knowledge.embedding import gateway_install

        gateway_install(GatewayKnowledgeCaller())
