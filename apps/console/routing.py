"""WebSocket routes for live console updates (mounted by inferia_site/asgi.py behind the session's authentication
and the allowed-hosts origin check)."""

from __future__ import annotations

from django.urls import URLPattern, path

from apps.console.consumers import DeploymentProgressConsumer, VectorStoreProgressConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/console/deployments/<int:pk>/", DeploymentProgressConsumer.as_asgi(), name="ws-deployment-progress"),
    path("ws/console/knowledge/<int:pk>/", VectorStoreProgressConsumer.as_asgi(), name="ws-vector-store-progress"),
]
