"""Prefix-aware routing through a running gateway: the turns of a conversation reach the engine that cached its
prefix, as the engines' own prefix cache counters show, while conversations still spread over the replicas."""

from __future__ import annotations

import urllib.request

from tests.gateway.conftest import http, make_deployment, wait_until_served
from tests.kit.processes import sim_start

MODEL = "gw-prefix"


def engine_counters(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    counters = {"requests": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("vllm:prefix_cache_hits_total"):
            counters["hits"] = float(value)
        elif name.startswith("vllm:prefix_cache_queries_total"):
            counters["queries"] = float(value)
        elif name.startswith("vllm:request_success_total"):
            counters["requests"] += float(value)
    return counters


def test_each_conversation_stays_on_the_engine_that_caches_it(tenant, gateway):
    engines = [sim_start("--prefix-cache-blocks", "4096", models=(MODEL,)) for _ in range(4)]
    try:
        make_deployment(tenant.organization, MODEL, [engine.url for engine in engines])
        wait_until_served(gateway, tenant.secret, MODEL)
        for conversation in range(8):
            messages = [{"role": "system", "content": f"Conversation {conversation}. " + "Mind the tides. " * 150}]
            for turn in range(3):
                messages.append({"role": "user", "content": f"Turn {turn}: what about the harbour? " * 10})
                body = {"model": MODEL, "messages": messages, "max_tokens": 2}
                status, _headers, _body = http(
                    "POST", f"{gateway.url}/v1/chat/completions", body=body, secret=tenant.secret
                )
                assert status == 200
                messages.append({"role": "assistant", "content": "The harbour is calm today. " * 10})
        counters = [engine_counters(engine.url) for engine in engines]
    finally:
        for engine in engines:
            engine.stop()

    assert sum(counter["requests"] for counter in counters) == 24
    assert sum(1 for counter in counters if counter["requests"]) >= 2  # conversations spread
    hits = sum(counter["hits"] for counter in counters)
    queries = sum(counter["queries"] for counter in counters)
    # Each second and third turn finds its whole previous prompt cached (most of it): two thirds of the turns, about
    # 60% of the prompt tokens. Routed by load alone, three in four of those turns would land on a cold engine.
    assert hits / queries > 0.5
