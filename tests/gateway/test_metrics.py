"""What `/metrics` says about the data plane, scraped from the real web process: requests by model, organisation
and status, TTFT and inter-token histograms, tokens, upstream errors by replica, in-flight requests and rate-limit
refusals; and, with PROMETHEUS_MULTIPROC_DIR, the sum over several web processes. Who may scrape it, and why the
number of series stays bounded by configured objects whatever clients send."""

from __future__ import annotations

import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apps.gateway.metrics import UNKNOWN_MODEL
from tests.gateway.conftest import METRICS_TOKEN, SIM_MODELS, http, make_deployment, wait_until_served
from tests.kit.ports import port_reserve
from tests.kit.processes import running_sim, web_start

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "stream": True}


def scrape_text(url: str) -> str:
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
        return response.read().decode()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of `/metrics`, by name and sorted labels."""
    text = scrape_text(url)
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
    _deployment, (dead, _live) = make_deployment(tenant.organization, "gw-shared", [f"http://127.0.0.1:{port_reserve()}",
                                                                                    sim.url])  # fmt: skip
    wait_until_served(gateway, tenant.secret, "gw-shared")
    _until_tried(gateway, tenant, dead)
    # Tokens spaced out by the engine: the inter-token histogram sees them (a zero-delay stream arrives in one read).
    with running_sim("--itl-ms", "5", models=SIM_MODELS) as engine:
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
    assert grew("inferia_gateway_requests_total", model=UNKNOWN_MODEL, organization="acme", status="404") == 1
    assert grew("inferia_gateway_requests_total", model="gw-chat", organization="acme", status="429") >= 1
    assert grew("inferia_gateway_time_to_first_token_seconds_count", model="gw-chat") >= 3
    assert grew("inferia_gateway_inter_token_latency_seconds_count", model="gw-other") == 2
    assert grew("inferia_gateway_tokens_total", model="gw-chat", direction="out") >= 3 * 8
    assert grew("inferia_gateway_tokens_total", model="gw-chat", direction="in") > 0
    assert grew("inferia_gateway_upstream_errors_total", replica=str(dead.pk), kind="ClientConnectorError") >= 1
    assert grew("inferia_gateway_rate_limited_total", organization="acme", limit="rate_limit_exceeded") >= 1
    assert value(after, "inferia_gateway_requests_in_flight") == 0


def test_several_processes_report_their_sum(tenant, test_database_url, tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "INFERIA_METRICS_TOKEN": METRICS_TOKEN}
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
        duration = {"model": "gw-chat", "route": "chat.completions", "status_class": "2xx"}
        assert value(samples, "inferia_gateway_request_duration_seconds_count", **duration) == 5
    # Read at scrape time, the fleet is the same from either process (dashboards and alerts take max, not sum).
    fleet = [{key: v for key, v in samples.items() if key[0] == "inferia_replicas"} for samples in totals]
    assert fleet[0] == fleet[1]
    assert sum(fleet[0].values()) == 1


def labelled(samples: dict, label: str, value_: str) -> list:
    return [key for key in samples if (label, value_) in key[1]]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_unknown_model_names_share_one_series(tenant, gateway, redis_cache):
    def unknown(name: str) -> int:
        body = {**CHAT, "model": name}
        return http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=tenant.secret)[0]

    assert unknown("warm-up-name") == 404  # the one series of unknown names exists from here on
    scrape_text(gateway.url)  # and so do the series of a scrape itself
    before_text, before_rss = scrape_text(gateway.url), rss_kib(gateway.pid)
    names = [f"random-{uuid.uuid4().hex}" for _ in range(2000)]
    assert {unknown(name) for name in names} == {404}
    after_text, after_rss = scrape_text(gateway.url), rss_kib(gateway.pid)
    print(  # the figures the README quotes: lines and bytes of /metrics, and the process's memory
        f"\n/metrics: {len(before_text.splitlines())} lines, {len(before_text)} bytes, RSS {before_rss} KiB before; "
        f"{len(after_text.splitlines())} lines, {len(after_text)} bytes, RSS {after_rss} KiB after 2000 unknown names"
    )
    assert len(after_text.splitlines()) == len(before_text.splitlines())
    assert not any(name in after_text for name in names[:50] + names[-50:])
    before, after = scrape(gateway.url), scrape(gateway.url)
    assert (
        value(after, "inferia_gateway_requests_total", model=UNKNOWN_MODEL, organization="acme", status="404") >= 2001
    )
    assert not [key for key in after if key not in before]


def test_made_up_http_methods_do_not_become_labels(gateway):
    for method in ("PROPFIND", "PURGE", "MKCOL"):
        http(method, f"{gateway.url}/healthz")
    methods = {dict(labels).get("method") for _name, labels in scrape(gateway.url)} - {None}
    assert "PROPFIND" not in methods
    assert "PURGE" not in methods
    assert methods <= {
        "GET",
        "HEAD",
        "POST",
        "PUT",
        "DELETE",
        "TRACE",
        "OPTIONS",
        "CONNECT",
        "PATCH",
        "<invalid method>",
    }


def _series_of_a_doomed_deployment(tenant, sim, process) -> tuple:
    deployment, (dead, live) = make_deployment(tenant.organization, "gw-shared", [f"http://127.0.0.1:{port_reserve()}",
                                                                                  sim.url])  # fmt: skip
    wait_until_served(process, tenant.secret, "gw-shared")
    _until_tried(process, tenant, dead)
    return deployment, dead, live


def _until_tried(process, tenant, dead) -> None:
    """Requests to `gw-shared` until the router has tried its refusing replica (it draws two replicas at random, so
    a fixed count could miss it), each one served by failing over."""
    for _ in range(40):
        body = {**CHAT, "model": "gw-shared"}
        assert http("POST", f"{process.url}/v1/chat/completions", body=body, secret=tenant.secret)[0] == 200
        if labelled(scrape(process.url), "replica", str(dead.pk)):
            return
    raise AssertionError("40 requests and the router never tried the refusing replica")


def test_series_of_deleted_replicas_and_deployments_are_dropped(tenant, sim, gateway, redis_cache):
    from apps.compute.models import Replica

    deployment, dead, live = _series_of_a_doomed_deployment(tenant, sim, gateway)
    samples = scrape(gateway.url)
    assert labelled(samples, "replica", str(dead.pk))
    assert labelled(samples, "model", "gw-shared")

    Replica.objects.filter(pk=dead.pk).delete()
    samples = scrape(gateway.url)
    assert not labelled(samples, "replica", str(dead.pk))
    assert labelled(samples, "model", "gw-shared")  # the deployment still exists

    deployment.delete()
    samples = scrape(gateway.url)
    assert not labelled(samples, "model", "gw-shared")
    assert not labelled(samples, "replica", str(live.pk))
    assert labelled(samples, "model", "gw-chat")  # others' series stay


def test_deleted_series_are_dropped_from_every_process(tenant, sim, test_database_url, tmp_path):
    """In multi-process mode the values sit in each process's file, which prometheus_client cannot edit: the scrape
    leaves out the series of deleted objects, whichever process wrote them."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "INFERIA_METRICS_TOKEN": METRICS_TOKEN}
    first, second = web_start(test_database_url, extra_env=env), web_start(test_database_url, extra_env=env)
    try:
        deployment, dead, _live = _series_of_a_doomed_deployment(tenant, sim, first)
        wait_until_served(second, tenant.secret, "gw-shared")
        body = {**CHAT, "model": "gw-shared"}
        assert http("POST", f"{second.url}/v1/chat/completions", body=body, secret=tenant.secret)[0] == 200
        assert labelled(scrape(second.url), "model", "gw-shared")
        deployment.delete()
        totals = [scrape(process.url) for process in (first, second)]
    finally:
        first.stop()
        second.stop()
    for samples in totals:
        assert not labelled(samples, "model", "gw-shared")
        assert not labelled(samples, "replica", str(dead.pk))


def _get_metrics(url: str, authorization: str | None = None) -> int:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return http("GET", f"{url}/metrics", headers=headers)[0]


def test_scraping_takes_the_configured_token(gateway):
    assert _get_metrics(gateway.url) == 401
    assert _get_metrics(gateway.url, "Bearer not-the-token") == 401
    assert _get_metrics(gateway.url, f"Basic {METRICS_TOKEN}") == 401
    assert _get_metrics(gateway.url, "Bearer " + "é" * 8) == 401
    assert _get_metrics(gateway.url, f"Bearer {METRICS_TOKEN}") == 200


def test_without_a_token_production_does_not_serve_metrics(private_gateway):
    assert _get_metrics(private_gateway.url) == 404
    assert _get_metrics(private_gateway.url, "Bearer anything") == 404


def test_without_a_token_only_a_developer_setup_serves_metrics(settings, rf):
    from django.http import Http404

    from apps.gateway.metrics_export import scrape_allowed

    settings.INFERIA_METRICS_TOKEN, settings.DEBUG, settings.EMBEDDED = "", True, False
    assert scrape_allowed(rf.get("/metrics"))
    settings.DEBUG, settings.EMBEDDED = False, True
    assert scrape_allowed(rf.get("/metrics"))
    settings.EMBEDDED = False
    with pytest.raises(Http404):  # production without a token does not serve /metrics
        scrape_allowed(rf.get("/metrics"))


def test_labels_come_from_what_inferia_knows():
    from apps.gateway import metrics

    metrics.models_known_set(["known-model"])
    metrics.request_counted(model="known-model", organization="acme", status=418)
    metrics.request_counted(model="made-up", organization="acme", status=200)
    metrics.upstream_error_counted(replica_id=7, kind="http_599")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items())))
        for metric in (metrics.REQUESTS, metrics.UPSTREAM_ERRORS)
        for family in metric.collect()
        for sample in family.samples
    }

    assert (
        "inferia_gateway_requests_total",
        (("model", "known-model"), ("organization", "acme"), ("status", "4xx")),
    ) in samples
    assert (
        "inferia_gateway_requests_total",
        (("model", UNKNOWN_MODEL), ("organization", "acme"), ("status", "200")),
    ) in samples
    assert ("inferia_gateway_upstream_errors_total", (("kind", "http_5xx"), ("replica", "7"))) in samples
    assert not [labels for _name, labels in samples if ("model", "made-up") in labels]


def test_pruning_removes_this_process_series_of_deleted_objects():
    from apps.gateway import metrics

    metrics.models_known_set(["kept-model", "gone-model"])
    for model, organization in (("kept-model", "kept-org"), ("gone-model", "kept-org"), ("kept-model", "gone-org")):
        metrics.request_counted(model=model, organization=organization, status=200)
    metrics.upstream_error_counted(replica_id=41, kind="timeout")
    metrics.upstream_error_counted(replica_id=42, kind="timeout")
    for provider in ("kept-provider", "gone-provider"):
        metrics.served_by_counted(model="kept-model", deployment="kept-model", provider=provider, status=200)
    live = metrics.LiveLabels(
        models=frozenset({"kept-model"}),
        replicas=frozenset({"41"}),
        organizations=frozenset({"kept-org"}),
        providers=frozenset({"kept-provider"}),
    )

    assert metrics.series_prune(live) >= 3
    held = [sample.labels for family in metrics.REQUESTS.collect() for sample in family.samples]
    assert {"model": "kept-model", "organization": "kept-org", "status": "200"} in held
    assert not [labels for labels in held if "gone" in labels["model"] + labels["organization"]]
    replicas = {sample.labels["replica"] for family in metrics.UPSTREAM_ERRORS.collect() for sample in family.samples}
    assert "41" in replicas
    assert "42" not in replicas
    providers = {sample.labels["provider"] for family in metrics.SERVED_BY.collect() for sample in family.samples}
    assert providers == {"kept-provider"}
    metrics.request_counted(model="kept-model", organization="kept-org", status=200)  # cached children were renewed
    counts = {
        tuple(sample.labels.values()): sample.value
        for family in metrics.REQUESTS.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert counts[("kept-model", "kept-org", "200")] == 2
