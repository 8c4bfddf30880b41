"""What `/metrics` says about the data plane, scraped from the real web process: requests by model, organisation
and status, TTFT and inter-token histograms, tokens, upstream errors by replica, in-flight requests and rate-limit
refusals; and, with PROMETHEUS_MULTIPROC_DIR, the sum over several web processes."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import http, make_deployment, wait_until_served
from tests.gateway.servers import free_port, running_sim, web_start

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, by name and sorted labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # noqa: S310 (loopback)
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_describe_requests_latency_tokens_and_failures(tenant, sim, gateway, redis_cache):
    from apps.policies.services import policy_create

    before = scrape(gateway.url)
    for _ in range(3):
        assert http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] == 200
    assert (
        http("POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "model": "nope"}, secret=tenant.secret)[0]
        == 404
    )
    # A deployment whose first replica refuses connections: the request fails over, the refusal is counted.
    _deployment, (dead, _live) = make_deployment(tenant.organization, "gw-shared", [f"http://127.0.0.1:{free_port()}",
                                                                                    sim.url])  # fmt: skip
    wait_until_served(gateway, tenant.secret, "gw-shared")
    for _ in range(4):
        http("POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "model": "gw-shared"}, secret=tenant.secret)
    # Tokens spaced out by the engine: the inter-token histogram sees them (a zero-delay stream arrives in one read).
    with running_sim("--itl-ms", "5") as engine:
        make_deployment(tenant.organization, "gw-other", [engine.url])
        wait_until_served(gateway, tenant.secret, "gw-other")
        for _ in range(2):
            body = {**CHAT, "model": "gw-other"}
            assert http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=tenant.secret)[0] == 200
    policy_create(actor=None, organization=tenant.organization, requests_per_minute=1)
    statuses = [http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] for _ in "abc"]
    assert 429 in statuses
    after = scrape(gateway.url)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("inferia_gateway_requests_total", model="gw-chat", organization="acme", status="200") >= 3
    assert grew("inferia_gateway_requests_total", model="nope", organization="acme", status="404") == 1
    assert grew("inferia_gateway_requests_total", model="gw-chat", organization="acme", status="429") >= 1
    assert grew("inferia_gateway_time_to_first_token_seconds_count", model="gw-chat") >= 3
    assert grew("inferia_gateway_inter_token_latency_seconds_count", model="gw-other") == 2
    assert grew("inferia_gateway_tokens_total", model="gw-chat", direction="out") >= 3 * 8
    assert grew("inferia_gateway_tokens_total", model="gw-chat", direction="in") > 0
    assert grew("inferia_gateway_upstream_errors_total", replica=str(dead.pk), kind="ClientConnectorError") >= 1
    assert grew("inferia_gateway_rate_limited_total", organization="acme", limit="rate_limit_exceeded") >= 1
    assert value(after, "inferia_gateway_requests_in_flight") == 0


def test_several_processes_report_their_sum(tenant, test_database_url, tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first, second = web_start(test_database_url, extra_env=env), web_start(test_database_url, extra_env=env)
    try:
        for process, count in ((first, 2), (second, 3)):
            wait_until_served(process, tenant.secret, "gw-chat")
            for _ in range(count):
                assert http("POST", f"{process.url}/v1/chat/completions", body=CHAT, secret=tenant.secret)[0] == 200
        totals = [scrape(process.url) for process in (first, second)]
    finally:
        first.stop()
        second.stop()
    for samples in totals:
        assert value(samples, "inferia_gateway_requests_total", model="gw-chat", organization="acme", status="200") == 5
        assert value(samples, "inferia_gateway_tokens_total", model="gw-chat", direction="out") == 5 * 8
        assert value(samples, "inferia_gateway_requests_in_flight") == 0
