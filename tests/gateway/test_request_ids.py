"""Request ids are the gateway's: a caller's own `X-Request-ID` is kept beside ours, echoed and recorded, but never
keys anything, so callers that share an id neither share a concurrency slot nor lose each other's usage."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from django.conf import settings

from apps.usage.events import EVENT_FIELD
from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import SIM_MODELS, http, make_deployment, make_key, wait_until_served
from tests.kit.processes import running_sim

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "count with me"}], "max_tokens": 8}


async def _concurrently(url: str, secret: str, count: int, headers: dict[str, str]) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, dict]:
            async with session.post(
                f"{url}/v1/chat/completions",
                json={**CHAT, "stream": True},
                headers={"authorization": f"Bearer {secret}", **headers},
            ) as response:
                await response.read()
                return response.status, {k.lower(): v for k, v in response.headers.items()}

        return await asyncio.gather(*(one() for _ in range(count)))


def test_ten_requests_sharing_one_client_id_leave_ten_records(tenant, gateway, redis_cache):
    answers = asyncio.run(_concurrently(gateway.url, tenant.secret, 10, {"X-Request-ID": "retry-42"}))

    assert [status for status, _ in answers] == [200] * 10
    ours = {headers["x-request-id"] for _, headers in answers}
    assert len(ours) == 10
    assert "retry-42" not in ours
    assert {headers["x-client-request-id"] for _, headers in answers} == {"retry-42"}
    assert usage_stream_drain() == 10
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk)
    assert set(records.values_list("request_id", flat=True)) == ours
    assert set(records.values_list("client_request_id", flat=True)) == {"retry-42"}


def test_openais_client_request_id_header_is_kept_too(tenant, gateway, redis_cache):
    status, headers, _ = http(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        body=CHAT,
        secret=tenant.secret,
        headers={"X-Client-Request-Id": "job-7/step-3"},
    )
    assert status == 200
    assert headers["x-client-request-id"] == "job-7/step-3"
    usage_stream_drain()
    record = UsageRecord.objects.get(request_id=headers["x-request-id"])
    assert record.client_request_id == "job-7/step-3"


def test_one_organisation_cannot_erase_anothers_record_by_reusing_its_id(tenant, gateway, redis_cache):

    other = OrganizationFactory(name="Globex", slug="globex")
    _key, other_secret = make_key(other)
    make_deployment(other, "gw-chat", [tenant.replica.endpoint])
    wait_until_served(gateway, other_secret, "gw-chat")

    for secret in (other_secret, tenant.secret):  # the attacker first
        status, _, _ = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret=secret, headers={"X-Request-ID": "same"}
        )
        assert status == 200
    usage_stream_drain()
    assert UsageRecord.objects.filter(client_request_id="same").count() == 2
    assert UsageRecord.objects.filter(organization_id=tenant.organization.pk, client_request_id="same").exists()


def test_requests_sharing_a_client_id_each_hold_a_concurrency_slot(transactional_db, gateway, redis_cache):
    from apps.policies.services import policy_create

    organization = OrganizationFactory(name="Limited", slug="limited")
    policy_create(actor=None, organization=organization, concurrent_requests=3)
    _key, secret = make_key(organization)
    with running_sim("--ttft-ms", "400", models=SIM_MODELS) as slow:
        make_deployment(organization, "gw-chat", [slow.url])
        wait_until_served(gateway, secret, "gw-chat")
        answers = asyncio.run(_concurrently(gateway.url, secret, 6, {"X-Request-ID": "shared"}))

    assert sorted(status for status, _ in answers) == [200, 200, 200, 429, 429, 429]
    usage_stream_drain()
    assert UsageRecord.objects.filter(organization_id=organization.pk, client_request_id="shared").count() == 6


def test_a_client_id_we_would_not_store_is_a_400(tenant, gateway, redis_cache):
    for bad in ("x" * 129, "two words", "caf\u00e9"):
        status, headers, body = http(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            body=CHAT,
            secret=tenant.secret,
            headers={"X-Request-ID": bad.encode().decode("latin-1")},
        )
        assert status == 400, bad
        error = json.loads(body)["error"]
        assert error["param"] == "X-Request-ID"
        assert "x-client-request-id" not in headers
    entries = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    events = [json.loads(fields[EVENT_FIELD.encode()]) for _id, fields in entries]
    assert [(event["st"], event["crid"]) for event in events] == [(400, "")] * 3
