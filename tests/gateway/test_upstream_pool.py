"""The gateway's pooled connections to engines: reused back to back, never past the keep-alive it is given (an
engine closes idle connections itself, and a request sent on one as it closes fails with nothing received)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from apps.gateway.runtime import upstream_session


async def test_an_idle_connection_is_not_reused_past_the_keepalive(settings):
    settings.INFERIA_UPSTREAM_KEEPALIVE_SECONDS = 0.3
    client_ports: list[int] = []

    async def answer(request: web.Request) -> web.Response:
        client_ports.append(request.transport.get_extra_info("peername")[1])
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/chat/completions"
    try:
        async with upstream_session() as http:
            for pause in (0, 0, 1.0):
                await asyncio.sleep(pause)
                async with http.post(url, json={}) as response:
                    assert response.status == 200
                    await response.read()
    finally:
        await runner.cleanup()
    first, again, after_idle = client_ports
    assert again == first  # back to back: the pooled connection
    assert after_idle != first  # idle past the keep-alive: a new one
