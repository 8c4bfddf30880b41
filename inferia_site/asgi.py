"""ASGI entry point: `/v1/...` and Ollama's API (`/ollama/...`) go to the gateway's Channels consumers, everything
else to Django, and so do the files and vector-store endpoints under `/v1` (ordinary Django views,
apps.knowledge.openai_api), whose request bodies are bounded here before Django spools them. `/ollama/v1/...` is
`/v1/...`, as Ollama's server has it.

The split is a plain prefix test rather than a URL router: it runs on every inference request.
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # sets Django up before anything imports models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from apps.console.routing import websocket_urlpatterns  # noqa: E402
from apps.gateway.asgi import gateway_app  # noqa: E402
from apps.gateway.chat_socket import PATH as CHAT_SOCKET_PATH  # noqa: E402
from apps.gateway.chat_socket import chat_socket  # noqa: E402
from apps.gateway.vector_search import search_store_id  # noqa: E402
from inferia_runtime.heap import heap_settle  # noqa: E402

# Ollama's API, all of it the gateway's (apps.gateway.ollama) but its published schema.
OLLAMA_PREFIX = "/ollama"
OLLAMA_PATHS = ("/ollama/",)
DJANGO_OLLAMA_PATHS = frozenset({"/ollama/openapi.json", "/ollama/docs"})
OLLAMA_OPENAI_PREFIX = "/ollama/v1/"
# Paths under /v1 that Django serves (the published schema, files and vector stores), not the gateway's consumers;
# a store's search (`/v1/vector_stores/{id}/search`) is the gateway's (apps.gateway.vector_search).
DJANGO_V1_PATHS = frozenset({"/v1/openapi.json", "/v1/docs", "/v1/files", "/v1/vector_stores"})
DJANGO_V1_PREFIXES = ("/v1/files/", "/v1/vector_stores/")
UPLOAD_PATH = "/v1/files"
# The management API's upload of the same files, bounded the same way (answered in DRF's error shape).
API_UPLOAD_PATH = "/api/knowledge-files/"
# Room for a multipart body's boundaries and form fields beside the file itself.
UPLOAD_SLACK_BYTES = 64 * 1024
# Every other body Django serves under /v1 is a small JSON document.
JSON_BODY_MAX_BYTES = 1024 * 1024


def _too_large(limit: int, *, drf: bool = False) -> list[dict]:
    message = f"The request body is larger than {limit} bytes."
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    body = json.dumps({"detail": message} if drf else {"error": error})
    return [
        {"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]},
        {"type": "http.response.body", "body": body.encode()},
    ]


async def bounded_django(scope, receive, send, limit: int, *, drf: bool = False):  # type: ignore[no-untyped-def]
    """Django, with a request body of at most `limit` bytes: a larger declared length is refused at once, and a
    body that grows past it while arriving is cut off with the same 413 (Django sees the client leave)."""
    declared = dict(scope.get("headers") or ()).get(b"content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        for message in _too_large(limit, drf=drf):
            await send(message)
        return None
    received = 0

    async def receive_bounded():  # type: ignore[no-untyped-def]
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                for answer in _too_large(limit, drf=drf):
                    await send(answer)
                return {"type": "http.disconnect"}
        return message

    return await django_http(scope, receive_bounded, send)


async def http_app(scope, receive, send):  # type: ignore[no-untyped-def]
    path = scope["path"]
    if path.startswith(OLLAMA_OPENAI_PREFIX):
        # Ollama serves OpenAI's API under its own /v1 as well: a client given the /ollama base may use it.
        path = path[len(OLLAMA_PREFIX) :]
        scope = {**scope, "path": path, "raw_path": path.encode()}
    if path == API_UPLOAD_PATH and scope.get("method") == "POST":
        limit = settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES + UPLOAD_SLACK_BYTES
        return await bounded_django(scope, receive, send, limit, drf=True)
    if not path.startswith("/v1/"):
        if (path == OLLAMA_PREFIX or path.startswith(OLLAMA_PATHS)) and path not in DJANGO_OLLAMA_PATHS:
            return await gateway_app(scope, receive, send)
        return await django_http(scope, receive, send)
    if (path in DJANGO_V1_PATHS or path.startswith(DJANGO_V1_PREFIXES)) and search_store_id(path) is None:
        upload = path == UPLOAD_PATH
        limit = settings.INFERIA_KNOWLEDGE_FILE_MAX_BYTES + UPLOAD_SLACK_BYTES if upload else JSON_BODY_MAX_BYTES
        return await bounded_django(scope, receive, send, limit)
    return await gateway_app(scope, receive, send)


console_websockets = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


async def websocket_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The gateway's chat socket checks origins against its own list and needs no session; the console's sockets
    are same-origin and signed in."""
    if scope["path"] == CHAT_SOCKET_PATH:
        return await chat_socket(scope, receive, send)
    return await console_websockets(scope, receive, send)


application = ProtocolTypeRouter({"http": http_app, "websocket": websocket_app})

heap_settle()  # everything the server runs with is loaded: keep it out of the collector's way
