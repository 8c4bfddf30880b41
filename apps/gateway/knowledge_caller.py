"""The gateway's caller for knowledge bases (apps.knowledge.embedding): a `/v1` request run through the gateway's own
ASGI app in-process, and the engine's `/tokenize` of a deployment the organisation may use.

In-process for the reason the console playground is: the request meets the key's policy, limits, routing and
metering exactly as an application's would, with no URL to configure and no network hop.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async
from django.db import connections

from apps.gateway.runtime import runtime, runtime_close

_TOKENIZE_TIMEOUT = aiohttp.ClientTimeout(total=30.0)


class GatewayKnowledgeCaller:
    """Implements apps.knowledge.embedding.GatewayCaller."""

    async def request(self, *, path: str, secret: str, body: bytes) -> tuple[int, bytes]:
        from apps.gateway.asgi import gateway_app

        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"authorization", f"Bearer {secret}".encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
            "client": ("127.0.0.1", 0),
            "server": ("knowledge", 0),
        }
        delivered = False
        status = 0
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            # The gateway watches for the client leaving; this one stays until the answer is complete.
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        await gateway_app(scope, receive, send)
        return status, b"".join(parts)

    async def token_count(self, *, organization_id: int, model: str, text: str) -> int | None:
        document = await self._tokenize(organization_id=organization_id, model=model, text=text)
        count = document.get("count") if document is not None else None
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    async def _tokenize(self, *, organization_id: int, model: str, text: str) -> dict[str, Any] | None:
        rt = runtime()
        catalog = await rt.catalog.get()
        route = catalog.deployment_for(organization_id, model)
        if route is None or route.external:
            return None  # external OpenAI-compatible servers rarely have /tokenize: counts are approximated
        replica = rt.router.choose(route)
        if replica is None:
            return None
        # vLLM's default `add_special_tokens` (true): the count is the one the model's usage reports for this text.
        body = {"model": route.upstream_model or route.served_model_name, "prompt": text, "return_token_strs": False}
        try:
            async with rt.http.post(
                replica.urls["tokenize"],
                data=json.dumps(body, ensure_ascii=False).encode(),
                headers=route.upstream_headers,
                timeout=_TOKENIZE_TIMEOUT,
            ) as response:
                if response.status != 200:
                    return None
                document = json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        return document if isinstance(document, dict) else None

    async def close(self) -> None:
        await runtime_close()
        # The catalog and key lookups ran in asgiref's thread, whose connection would otherwise outlive the job.
        await sync_to_async(connections.close_all)()
