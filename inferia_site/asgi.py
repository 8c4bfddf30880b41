"""ASGI entry point: `/v1/...` goes to the gateway's Channels consumers, everything else to Django.

The split is a plain prefix test rather than a URL router: it runs on every inference request.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before anything imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from apps.console.routing import websocket_urlpatterns  # noqa: E402
from apps.gateway.asgi import gateway_app  # noqa: E402

# Paths under /v1 that Django serves (the published schema), not the streaming consumers.
DJANGO_V1_PATHS = frozenset({"/v1/openapi.json", "/v1/docs"})


async def http_app(scope, receive, send):  # type: ignore[no-untyped-def]
    path = scope["path"]
    if path.startswith("/v1/") and path not in DJANGO_V1_PATHS:
        return await gateway_app(scope, receive, send)
    return await django_http(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
