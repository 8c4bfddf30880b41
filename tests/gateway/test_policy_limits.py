"""Rate limits, budgets and fail-closed admission, through the real web process: a refused request answers 429
with OpenAI's headers, 200 concurrent requests never spend more than the budget, and without Redis the gateway
refuses (503) rather than serving uncounted."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import SIM_MODELS, Tenant, http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import TcpRelay
from tests.kit.processes import running_sim, web_start

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "count with me"}], "max_tokens": 16}
PRICES = {"price_input_per_mtok_micros": 1_000_000, "price_output_per_mtok_micros": 2_000_000}
# The reservation of one CHAT request at PRICES: prompt bound 16 + 8 per message + 13 bytes = 37 tokens at 1 micro,
# 16 tokens of answer at 2 micros.
CHAT_WORST_CASE_MICROS = 37 + 16 * 2


def tenant_with_policy(gateway, engine_url: str, *, model: str = "gw-chat", **policy_fields) -> Tenant:
    """An organisation whose policy is in place before the gateway first sees its key."""
    from apps.policies.services import policy_create

    organization = OrganizationFactory(name="Limited", slug="limited")
    policy_create(actor=None, organization=organization, **policy_fields)
    key, secret = make_key(organization)
    deployment, replicas = make_deployment(organization, model, [engine_url], **PRICES)
    wait_until_served(gateway, secret, model)
    return Tenant(organization, key, secret, deployment, replicas[0])


def chat(gateway, secret: str, body: dict | None = None) -> tuple[int, dict[str, str], dict]:
    status, headers, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body or CHAT, secret=secret)
    return status, headers, json.loads(raw)


def test_the_request_over_the_rate_limit_gets_429_with_openai_headers(transactional_db, sim, gateway, redis_cache):
    tenant = tenant_with_policy(gateway, sim.url, requests_per_minute=2)

    first = chat(gateway, tenant.secret)
    second = chat(gateway, tenant.secret)
    status, headers, body = chat(gateway, tenant.secret)

    assert (first[0], second[0]) == (200, 200)
    assert first[1]["x-ratelimit-limit-requests"] == "2"
    assert first[1]["x-ratelimit-remaining-requests"] == "1"
    assert second[1]["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in first[1]
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(headers["retry-after"]) <= 60


def test_a_streamed_answer_carries_the_rate_limit_headers(transactional_db, sim, gateway, redis_cache):
    tenant = tenant_with_policy(gateway, sim.url, requests_per_minute=100, tokens_per_minute=100_000)

    status, headers, _ = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "stream": True}, secret=tenant.secret
    )

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["x-ratelimit-remaining-requests"] == "99"
    assert int(headers["x-ratelimit-remaining-tokens"]) < 100_000


async def _many_streams(url: str, secret: str, body: dict, count: int) -> list[tuple[int, bytes]]:
    headers = {"authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> tuple[int, bytes]:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
                return response.status, await response.read()

        return await asyncio.gather(*(one() for _ in range(count)))


def test_200_concurrent_requests_never_spend_more_than_the_budget(transactional_db, gateway, redis_cache):
    budget = 50 * CHAT_WORST_CASE_MICROS
    # The engine waits a second before answering, so that every request is admitted or refused before any settles.
    with running_sim("--ttft-ms", "1000", "--max-num-seqs", "256", models=SIM_MODELS) as engine:
        tenant = tenant_with_policy(gateway, engine.url, model="gw-other", budget_per_day_micros=budget)
        body = {**CHAT, "model": "gw-other", "stream": True}
        answers = asyncio.run(_many_streams(gateway.url, tenant.secret, body, 200))

    succeeded = [raw for status, raw in answers if status == 200]
    refused = [json.loads(raw)["error"]["code"] for status, raw in answers if status == 429]
    assert len(succeeded) == 50
    assert len(refused) == 150
    assert set(refused) <= {"budget_exceeded", "quota_exceeded"}
    assert all(b"data: [DONE]" in raw for raw in succeeded)

    usage_stream_drain()
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk)
    assert records.filter(outcome="ok").count() == 50
    assert records.filter(outcome="denied", error_code="budget_exceeded").count() == 150
    spent = sum(records.values_list("cost_micros", flat=True))
    assert 0 < spent <= budget
    # The worker audits the denials per key, reason and minute (one event, or two across a minute boundary).
    audited = AuditEvent.objects.filter(action="policy.denied", organization_id=tenant.organization.pk)
    assert 1 <= audited.count() <= 2
    assert sum(event.changes["requests"] for event in audited) == 150
    assert {(event.changes["reason"], event.target_id, event.outcome) for event in audited} == {
        ("budget_exceeded", str(tenant.key.pk), "denied")
    }
    usage_stream_drain()
    assert records.count() == 200  # nothing stored or audited twice


def test_without_redis_the_gateway_refuses_with_503_and_recovers(transactional_db, sim, test_database_url):
    relay = TcpRelay("127.0.0.1", int(settings.CACHE_REDIS_URL.rsplit(":", 1)[1].split("/")[0]))
    redis_url = f"redis://127.0.0.1:{relay.port}/{settings.CACHE_REDIS_URL.rsplit('/', 1)[1]}"
    web = web_start(test_database_url, extra_env={"INFERIA_CACHE_REDIS_URL": redis_url})
    try:
        tenant = tenant_with_policy(web, sim.url, requests_per_minute=1000)
        assert chat(web, tenant.secret)[0] == 200

        relay.cut()
        status, _, body = chat(web, tenant.secret)
        assert status == 503
        assert body["error"]["code"] == "policy_unavailable"

        relay.restore()
        statuses = [chat(web, tenant.secret)[0] for _ in range(3)]
        assert statuses[-1] == 200
    finally:
        web.stop()
        relay.stop()
