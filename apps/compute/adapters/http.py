"""A small synchronous HTTP call for adapters (which run in Celery tasks), made with aiohttp like all our HTTP."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

from apps.compute.urlsafety import guarded_connector


@dataclass(frozen=True)
class HttpResponse:
    """A whole response: status, headers and body text."""

    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.text)


async def http_call_async(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    ssrf_guard: bool = False,
) -> HttpResponse:
    """One request, the body read whole. Raises aiohttp.ClientError or TimeoutError on transport failures.

    `ssrf_guard` connects through `guarded_connector()`: for URLs a user supplied (external endpoints)."""
    client_timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = guarded_connector() if ssrf_guard else None
    async with (
        aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session,
        session.request(method, url, json=json_body, headers=headers) as response,
    ):
        return HttpResponse(response.status, dict(response.headers), await response.text())


def http_call(method: str, url: str, **kwargs: Any) -> HttpResponse:
    """`http_call_async` from synchronous code (a Celery task), on a short-lived event loop."""
    return asyncio.run(http_call_async(method, url, **kwargs))
