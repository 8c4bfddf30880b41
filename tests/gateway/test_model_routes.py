"""Model routes through the real web process: a canary split measured over 1,000 requests, a weight change reaching
the gateway within a second, a fallback taking over when every replica of the first deployment dies (no request
failing before its first byte), usage and cost recorded against the deployment that served, and the key's
allow-list applied to every deployment a route reaches."""

from __future__ import annotations

import asyncio
import collections
import json

import aiohttp

from apps.compute.route_services import SplitTarget, model_route_create, model_route_update
from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.gateway.conftest import SIM_MODELS, http, make_deployment, wait_until_served
from tests.gateway.test_metrics import scrape, value
from tests.kit.processes import sim_start
from tests.kit.waiting import eventually

CHAT = {"model": "gw-split", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
REQUESTS = 1000


def route_create(organization, name="gw-split", *, splits, fallbacks=()):
    from django.db import transaction

    with transaction.atomic():
        return model_route_create(
            organization=organization,
            name=name,
            splits=[SplitTarget(deployment, weight) for deployment, weight in splits],
            fallbacks=list(fallbacks),
            actor=None,
        )


async def _served_by(url: str, secret: str, count: int, *, concurrency: int = 32) -> list[tuple[int, str, bytes]]:
    """`count` requests for the route: (status, x-inferia-deployment, body) of each."""
    headers = {"authorization": f"Bearer {secret}"}
    results: list[tuple[int, str, bytes]] = []
    remaining = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in remaining:
                async with session.post(f"{url}/v1/chat/completions", json=CHAT, headers=headers) as response:
                    body = await response.read()
                    results.append((response.status, response.headers.get("x-inferia-deployment", ""), body))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def chat(gateway, secret: str, model: str = "gw-split") -> tuple[int, dict[str, str], dict]:
    status, headers, raw = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "model": model}, secret=secret
    )
    return status, headers, json.loads(raw)


def test_a_canary_at_ten_percent_gets_ten_percent_of_1000_requests(tenant, sim, gateway, redis_cache):
    canary, _ = make_deployment(
        tenant.organization,
        "gw-other",
        [sim.url],
        price_input_per_mtok_micros=3_000_000,
        price_output_per_mtok_micros=5_000_000,
    )
    route_create(tenant.organization, splits=[("gw-chat", 90), ("gw-other", 10)])
    wait_until_served(gateway, tenant.secret, "gw-split")
    before = scrape(gateway.url)

    results = asyncio.run(_served_by(gateway.url, tenant.secret, REQUESTS))

    assert {status for status, _, _ in results} == {200}
    served = collections.Counter(deployment for _, deployment, _ in results)
    assert set(served) == {"gw-chat", "gw-other"}
    share = served["gw-other"] / REQUESTS
    # 10% within 3 points: over 1,000 draws the standard deviation is under 1 point.
    assert 0.07 <= share <= 0.13, served
    # The client asked for the route: answers name it. (Only gw-chat's are checked: the test engine serves every
    # name but answers with its first, as vLLM does with several served names.)
    assert {json.loads(body)["model"] for _, deployment, body in results if deployment == "gw-chat"} == {"gw-split"}

    assert usage_stream_drain() == REQUESTS
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk)
    by_deployment = collections.Counter(records.values_list("deployment_id", flat=True))
    assert by_deployment == {tenant.deployment.pk: served["gw-chat"], canary.pk: served["gw-other"]}
    assert set(records.values_list("model", flat=True)) == {"gw-split"}
    on_canary = records.filter(deployment_id=canary.pk).first()
    assert on_canary.cost_micros == (on_canary.prompt_tokens * 3_000_000 + on_canary.completion_tokens * 5_000_000) // (
        1_000_000
    )

    after = scrape(gateway.url)
    for deployment in ("gw-chat", "gw-other"):
        provider = (tenant.deployment if deployment == "gw-chat" else canary).pool.provider.name
        labels = {"model": "gw-split", "deployment": deployment, "provider": provider, "status": "200"}
        grew = value(after, "inferia_gateway_deployment_requests_total", **labels) - value(
            before, "inferia_gateway_deployment_requests_total", **labels
        )
        assert grew == served[deployment]


def test_a_weight_change_reaches_the_gateway_within_a_second(tenant, sim, gateway, redis_cache):
    make_deployment(tenant.organization, "gw-other", [sim.url])
    route = route_create(tenant.organization, splits=[("gw-chat", 100), ("gw-other", 0)])
    wait_until_served(gateway, tenant.secret, "gw-split")
    assert {chat(gateway, tenant.secret)[1]["x-inferia-deployment"] for _ in range(20)} == {"gw-chat"}

    from django.db import transaction

    with transaction.atomic():
        model_route_update(route=route, splits=[SplitTarget("gw-chat", 0), SplitTarget("gw-other", 1)], actor=None)

    eventually(
        lambda: chat(gateway, tenant.secret)[1]["x-inferia-deployment"] == "gw-other",
        timeout=1.0,
        interval=0,
        what="the new weights",
    )
    assert {chat(gateway, tenant.secret)[1]["x-inferia-deployment"] for _ in range(20)} == {"gw-other"}


async def _streams_while(url: str, secret: str, *, seconds: float, concurrency: int) -> list[tuple[int, bool, str]]:
    """Streamed requests for the route for `seconds`: (status, got a first byte, x-inferia-deployment) of each."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    results: list[tuple[int, bool, str]] = []
    headers = {"authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while loop.time() < deadline:
                body = {**CHAT, "stream": True, "max_tokens": 8}
                async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                    first = await response.content.readany()
                    await response.read()
                    results.append((response.status, bool(first), response.headers.get("x-inferia-deployment", "")))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def test_a_fallback_takes_over_when_every_replica_of_the_first_deployment_dies(tenant, gateway, redis_cache):
    first, second = sim_start("--itl-ms", "5", models=SIM_MODELS), sim_start("--itl-ms", "5", models=SIM_MODELS)
    try:
        primary, _ = make_deployment(tenant.organization, "gw-other", [first.url, second.url])
        route_create(tenant.organization, splits=[("gw-other", 1)], fallbacks=["gw-chat"])
        wait_until_served(gateway, tenant.secret, "gw-split")
        assert chat(gateway, tenant.secret)[1]["x-inferia-deployment"] == "gw-other"

        async def load_while_killing() -> list[tuple[int, bool, str]]:
            load = asyncio.ensure_future(_streams_while(gateway.url, tenant.secret, seconds=2.5, concurrency=8))
            await asyncio.sleep(0.8)
            first.kill()
            second.kill()
            return await load

        results = asyncio.run(load_while_killing())
    finally:
        first.stop()
        second.stop()

    assert len(results) > 50
    # Every request got a 200 and a first byte: none failed before it, the fallback took the rest.
    assert {status for status, _, _ in results} == {200}
    assert all(first_byte for _, first_byte, _ in results)
    served = collections.Counter(deployment for _, _, deployment in results)
    assert served["gw-other"] > 0, served
    assert served["gw-chat"] > 0, served
    assert results[-1][2] == "gw-chat"

    usage_stream_drain()
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk, status_code=200)
    fallback_records = records.filter(deployment_id=tenant.deployment.pk)
    assert fallback_records.count() >= served["gw-chat"]
    assert set(fallback_records.values_list("replica_id", flat=True)) == {tenant.replica.pk}
    assert records.filter(deployment_id=primary.pk).exists()


def test_a_route_with_no_live_deployment_left_falls_back_at_once(tenant, gateway, redis_cache):
    from tests.kit.ports import port_reserve

    make_deployment(tenant.organization, "gw-other", [f"http://127.0.0.1:{port_reserve()}"])
    route_create(tenant.organization, splits=[("gw-other", 1)], fallbacks=["gw-chat"])
    wait_until_served(gateway, tenant.secret, "gw-split")

    statuses = [chat(gateway, tenant.secret) for _ in range(5)]

    assert [(status, headers["x-inferia-deployment"]) for status, headers, _ in statuses] == [(200, "gw-chat")] * 5


def test_every_deployment_a_route_reaches_passes_the_keys_allow_list(tenant, sim, gateway, redis_cache):
    from apps.keys.services import api_key_create

    make_deployment(tenant.organization, "gw-other", [sim.url])
    make_deployment(tenant.organization, "gw-shared", [sim.url])
    route_create(tenant.organization, splits=[("gw-chat", 1), ("gw-other", 1)], fallbacks=["gw-shared"])
    stable_only = api_key_create(
        organization=tenant.organization, name="stable", scopes=["inference"], allowed_models=["gw-split", "gw-chat"]
    ).secret
    canary_only = api_key_create(
        organization=tenant.organization, name="canary", scopes=["inference"], allowed_models=["gw-split", "gw-shared"]
    ).secret
    targets_only = api_key_create(
        organization=tenant.organization, name="targets", scopes=["inference"], allowed_models=["gw-chat", "gw-other"]
    ).secret
    wait_until_served(gateway, stable_only, "gw-split")

    # Split over the deployments the key may use: never the one it may not.
    assert {chat(gateway, stable_only)[1]["x-inferia-deployment"] for _ in range(20)} == {"gw-chat"}
    # No split target allowed: only the allowed fallback serves.
    assert {chat(gateway, canary_only)[1]["x-inferia-deployment"] for _ in range(5)} == {"gw-shared"}
    # The route's name itself must be allowed.
    status, _, body = chat(gateway, targets_only)
    assert (status, body["error"]["code"]) == (403, "model_not_allowed")


def test_a_route_is_listed_as_a_model_of_its_organisation_only(tenant, sim, gateway, redis_cache):
    from tests.factories import OrganizationFactory
    from tests.gateway.conftest import make_key

    make_deployment(tenant.organization, "gw-other", [sim.url])
    route_create(tenant.organization, splits=[("gw-chat", 1)])
    wait_until_served(gateway, tenant.secret, "gw-split")
    _, secret = make_key(OrganizationFactory(name="Other", slug="other"))

    _, _, listing = http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)
    assert "gw-split" in [card["id"] for card in json.loads(listing)["data"]]
    assert chat(gateway, secret)[0] == 404


def test_the_cli_creates_changes_lists_and_deletes_a_route_that_the_gateway_follows(tenant, sim, gateway, redis_cache):
    import os
    import subprocess

    from tests.gateway.conftest import make_key
    from tests.kit.processes import INFERIA

    make_deployment(tenant.organization, "gw-other", [sim.url])
    _, manage = make_key(tenant.organization, scopes=("manage",))

    def inferia(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "INFERIA_URL": gateway.url, "INFERIA_API_KEY": manage}
        done = subprocess.run([INFERIA, "routes", *args], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    created = inferia("set", "gw-split", "--split", "gw-chat=100", "--split", "gw-other=0", "--fallback", "gw-other")
    assert "route 'gw-split'" in created.stdout
    assert "created: gw-chat=100 gw-other=0; fallbacks: gw-other" in created.stdout
    wait_until_served(gateway, tenant.secret, "gw-split")
    assert {chat(gateway, tenant.secret)[1]["x-inferia-deployment"] for _ in range(10)} == {"gw-chat"}

    changed = inferia("set", "gw-split", "--split", "gw-chat=0", "--split", "gw-other=1")
    assert "changed: gw-chat=0 gw-other=1; fallbacks: gw-other" in changed.stdout
    eventually(
        lambda: chat(gateway, tenant.secret)[1]["x-inferia-deployment"] == "gw-other", timeout=1.0, interval=0, what="x"
    )
    listed = json.loads(inferia("list", "--json").stdout)
    assert [(row["name"], [s["weight"] for s in row["splits"]]) for row in listed] == [("gw-split", [0, 1])]

    inferia("delete", "gw-split")
    eventually(lambda: chat(gateway, tenant.secret)[0] == 404, timeout=1.0, interval=0, what="the route gone")


def test_a_deployment_queued_past_the_limit_passes_its_requests_to_the_fallback(tenant, sim, test_database_url):
    from apps.compute.routing import replica_load_store
    from tests.kit.processes import web_start

    _, (queued,) = make_deployment(tenant.organization, "gw-other", [sim.url])
    route_create(tenant.organization, splits=[("gw-other", 1)], fallbacks=["gw-chat"])
    web = web_start(test_database_url, extra_env={"INFERIA_FALLBACK_QUEUE_LIMIT": "5"})
    try:
        wait_until_served(web, tenant.secret, "gw-split")
        replica_load_store(replica_id=queued.pk, running=4, waiting=4, kv_cache=0.5)
        assert {chat(web, tenant.secret)[1]["x-inferia-deployment"] for _ in range(5)} == {"gw-other"}

        # The health checker reports a queue past the limit on its every replica: the fallback takes the requests.
        replica_load_store(replica_id=queued.pk, running=4, waiting=5, kv_cache=1.0)
        eventually(
            lambda: chat(web, tenant.secret)[1]["x-inferia-deployment"] == "gw-chat", timeout=5.0, what="the fallback"
        )
        replica_load_store(replica_id=queued.pk, running=0, waiting=0, kv_cache=0)
        eventually(
            lambda: chat(web, tenant.secret)[1]["x-inferia-deployment"] == "gw-other", timeout=5.0, what="back again"
        )
    finally:
        web.stop()
