"""Metering: exactly one usage event per request, stored idempotently, with hourly rollups; nothing lost when a
worker dies before acknowledging."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.db.models import Sum
from django.test import override_settings

from apps.gateway.event_relay import usage_event_taken
from apps.usage.events import EVENT_FIELD, UsageEvent, usage_event_decode
from apps.usage.models import UsageRecord, UsageRollup
from apps.usage.services import usage_records_store
from apps.usage.stream import USAGE_GROUP, usage_stream_drain

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "count with me"}], "max_tokens": 16}


async def _many_streams(url: str, secret: str, count: int) -> list[tuple[int, str, bytes]]:
    headers = {"authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, str, bytes]:
            async with session.post(f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers) as r:
                return r.status, r.headers["x-request-id"], await r.read()

        return await asyncio.gather(*(one() for _ in range(count)))


def test_200_concurrent_requests_make_exactly_200_usage_rows(tenant, gateway, redis_cache):
    answers = asyncio.run(_many_streams(gateway.url, tenant.secret, 200))
    assert all(status == 200 for status, _, _ in answers)
    request_ids = {request_id for _, request_id, _ in answers}
    assert len(request_ids) == 200

    assert usage_stream_drain() == 200
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk)
    assert set(records.values_list("request_id", flat=True)) == request_ids
    assert not records.filter(estimated=True).exists()
    assert set(records.values_list("completion_tokens", flat=True)) == {16}
    assert set(records.values_list("replica_id", flat=True)) == {tenant.replica.pk}
    record = records.first()
    assert record.api_key_id == tenant.key.pk
    assert record.deployment_id == tenant.deployment.pk
    assert record.streamed
    assert record.status_code == 200
    assert record.outcome == "ok"
    assert record.cost_micros == (record.prompt_tokens * 1_000_000 + 16 * 2_000_000) // 1_000_000
    assert record.ttft_ms is not None
    assert record.latency_ms >= record.ttft_ms

    totals = UsageRollup.objects.filter(organization_id=tenant.organization.pk).aggregate(
        requests=Sum("requests"), completion=Sum("completion_tokens")
    )
    assert totals == {"requests": 200, "completion": 200 * 16}
    assert usage_stream_drain() == 0  # all acknowledged


def test_storing_the_same_events_twice_changes_nothing(tenant, gateway, redis_cache):
    asyncio.run(_many_streams(gateway.url, tenant.secret, 3))
    entries = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    events = [usage_event_decode(fields[EVENT_FIELD.encode()]) for _id, fields in entries]
    assert usage_records_store(events) == 3
    assert usage_records_store(events) == 0
    assert UsageRollup.objects.get(organization_id=tenant.organization.pk).requests == 3


def test_a_batch_read_by_a_worker_that_died_is_stored_by_the_next(tenant, gateway, redis_cache):
    asyncio.run(_many_streams(gateway.url, tenant.secret, 5))
    stream = settings.INFERIA_USAGE_STREAM
    usage_stream_drain(consumer="warm-up", max_batches=0)  # creates the group
    read = redis_cache.xreadgroup(USAGE_GROUP, "crashed-worker", {stream: ">"}, count=100)
    assert len(read[0][1]) == 5  # read, never acknowledged: the worker "died"
    assert usage_stream_drain(consumer="survivor") == 0  # not idle long enough to be taken over yet
    assert usage_stream_drain(consumer="survivor", claim_idle_ms=0) == 5
    assert UsageRecord.objects.filter(organization_id=tenant.organization.pk).count() == 5
    assert redis_cache.xpending(stream, USAGE_GROUP)["pending"] == 0


def test_after_a_failover_a_batch_read_from_the_old_master_is_taken_over_at_once(tenant, gateway, redis_cache):
    asyncio.run(_many_streams(gateway.url, tenant.secret, 4))
    stream = settings.INFERIA_USAGE_STREAM
    usage_stream_drain(consumer="warm-up", max_batches=0)  # creates the group, records the master it sees
    redis_cache.xreadgroup(USAGE_GROUP, "lost-worker", {stream: ">"}, count=100)  # read, then the master died
    redis_cache.set("inferia:redis-epoch:usage", "the-old-master")  # the promoted replica's replication id differs
    assert usage_stream_drain(consumer="survivor") == 4  # not idle for CLAIM_IDLE_MS, yet taken over
    assert UsageRecord.objects.filter(organization_id=tenant.organization.pk).count() == 4
    assert redis_cache.xpending(stream, USAGE_GROUP)["pending"] == 0


@override_settings(INFERIA_REDIS_WAIT_REPLICAS=1, INFERIA_REDIS_WAIT_MS=10)
def test_an_append_that_no_replica_acknowledges_is_still_stored_on_the_master(redis_cache, caplog, monkeypatch):
    from apps.gateway import metering
    from apps.usage.events import UsageEvent
    from inferia_runtime.redis_clients import GatewayRedis

    monkeypatch.setattr(metering, "_replica_missing_until", 0.0)  # restored afterwards: the module's own state

    async def append(request_id: str) -> None:
        client = GatewayRedis.from_url(settings.CACHE_REDIS_URL)
        event = UsageEvent(request_id=request_id, started_at=0.0, endpoint="chat.completions", prompt_tokens=3)
        await metering.usage_append_waited(client, event, replicas=settings.INFERIA_REDIS_WAIT_REPLICAS)
        await client.aclose()

    asyncio.run(append("waited"))  # this Redis has no replica: WAIT answers 0 after its timeout
    asyncio.run(append("not-waited"))  # and the next appends do not wait again at once
    entries = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    assert [usage_event_decode(fields[EVENT_FIELD.encode()])["request_id"] for _id, fields in entries] == [
        "waited",
        "not-waited",
    ]
    assert caplog.text.count("reached 0 of 1 replicas") == 1


def test_unauthenticated_requests_are_not_metered(tenant, gateway, redis_cache):
    from tests.gateway.conftest import http

    http("POST", f"{gateway.url}/v1/chat/completions", body=CHAT, secret="sk-inf-invalid")
    assert redis_cache.xlen(settings.INFERIA_USAGE_STREAM) == 0
    status, _, _ = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "model": "nope"}, secret=tenant.secret
    )
    assert status == 404
    (entry,) = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    event = json.loads(entry[1][EVENT_FIELD.encode()])
    assert (event["st"], event["out"], event["m"]) == (404, "error", "nope")


@pytest.mark.parametrize("stream", [False, True])
def test_the_usage_event_is_recorded_before_the_answers_last_byte(tenant, redis_cache, stream):
    """A web process that dies between answering and metering must not leave a client with a whole answer and no
    usage record: the response's final message goes out only once the event is in the stream."""
    from apps.gateway.asgi import gateway_app
    from apps.gateway.runtime import runtime_close

    body = json.dumps({**CHAT, "stream": stream}).encode()
    request_id = f"last-byte-{int(stream)}"
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [
            (b"authorization", f"Bearer {tenant.secret}".encode()), (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode()),
        ],
    }  # fmt: skip
    events_when_ended: list[str] = []
    body_sent = bytearray()

    async def serve() -> None:
        received = False

        async def receive() -> dict:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] != "http.response.body":
                return
            body_sent.extend(message.get("body", b""))
            if not message.get("more_body", False):
                entries = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
                events_when_ended.extend(json.loads(fields[EVENT_FIELD.encode()])["crid"] for _id, fields in entries)

        try:
            await gateway_app(scope, receive, send)
        finally:
            await runtime_close()
            await sync_to_async(connections.close_all)()  # the gateway's thread's connection, not the test's

    asyncio.run(serve())

    assert body_sent.endswith(b"data: [DONE]\n\n" if stream else b"}")
    assert request_id in events_when_ended


def test_the_flush_records_when_each_key_was_last_used(tenant, gateway, redis_cache):
    from apps.keys.models import ApiKey

    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at is None
    asyncio.run(_many_streams(gateway.url, tenant.secret, 3))
    usage_stream_drain()

    last_used = ApiKey.objects.get(pk=tenant.key.pk).last_used_at
    newest = UsageRecord.objects.filter(api_key_id=tenant.key.pk).order_by("-started_at").first().started_at
    assert last_used == newest
    ApiKey.objects.filter(pk=tenant.key.pk).update(last_used_at=newest + timedelta(hours=1))
    asyncio.run(_many_streams(gateway.url, tenant.secret, 1))
    usage_stream_drain()
    assert ApiKey.objects.get(pk=tenant.key.pk).last_used_at == newest + timedelta(hours=1)  # never moved back


@pytest.mark.parametrize(
    ("path", "body", "endpoint"),
    [
        ("/v1/messages", {"model": "gw-chat", "messages": "not a list", "max_tokens": 5}, "messages"),
        ("/v1/responses", {"model": "gw-chat", "input": 42}, "responses"),
        ("/ollama/api/chat", {"model": "gw-chat", "messages": "not a list"}, "ollama.chat"),
    ],
)
def test_a_body_an_edge_cannot_translate_is_metered_for_a_good_key_only(
    tenant, gateway, redis_cache, path, body, endpoint
):
    """Every authenticated inference request has its usage record, also one refused at an edge before the pipeline;
    a bad key gets its 401 first and no record."""
    from tests.gateway.conftest import http

    refused, _, _ = http("POST", f"{gateway.url}{path}", body=body, secret="sk-inf-invalid")
    assert refused == 401
    assert redis_cache.xlen(settings.INFERIA_USAGE_STREAM) == 0
    status, headers, _ = http("POST", f"{gateway.url}{path}", body=body, secret=tenant.secret)
    assert status == 400
    (entry,) = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    event = usage_event_decode(entry[1][EVENT_FIELD.encode()])
    assert (event["status_code"], event["outcome"], event["endpoint"]) == (400, "error", endpoint)
    assert (event["request_id"], event["api_key_id"]) == (headers["x-request-id"], tenant.key.pk)


@pytest.mark.parametrize("number", [b"-Infinity", b"123456789012345678901234567890"])
def test_the_engines_usage_is_read_from_an_event_only_the_standard_library_parses(number):
    # An engine written in Python may write -Infinity (a logprob), and JSON allows integers past 64 bits.
    usage = UsageEvent(request_id="r1", started_at=0.0, endpoint="chat.completions")
    event = b'data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3},"extra":%b}\n\n' % number
    assert usage_event_taken(event + b"data: [DONE]\n\n", False, usage) == (b"data: [DONE]\n\n", 1)
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 3)


@override_settings(INFERIA_REDIS_TIMEOUT_SECONDS=0.2, INFERIA_USAGE_APPEND_RETRY_SECONDS=0.0)
@pytest.mark.parametrize("replicas", [0, 1], ids=["pipelined", "waited"])
def test_a_usage_event_redis_does_not_take_is_counted_lost_for_the_operators_alert(caplog, replicas):
    """A lost event is a request nobody is billed for: besides its log line, it counts in a metric an alert reads."""
    from prometheus_client import REGISTRY

    from apps.gateway.metering import UsageAppender
    from inferia_runtime.redis_clients import GatewayRedis, gateway_redis_options
    from inferia_runtime.redis_pipe import RedisPipe, resp_command
    from tests.kit.redis_server import RedisServer

    def lost() -> float:
        return REGISTRY.get_sample_value("inferia_gateway_usage_events_lost_total") or 0.0

    server = RedisServer()

    async def append_while_redis_is_frozen() -> None:
        client = GatewayRedis.from_url(server.url(0), **gateway_redis_options())
        pipe = RedisPipe(client)
        await pipe.execute(resp_command(b"PING"))  # connected before Redis stops answering
        server.freeze()
        try:
            with override_settings(INFERIA_REDIS_WAIT_REPLICAS=replicas):
                await UsageAppender(client, pipe).append(
                    UsageEvent(request_id="unbilled-1", started_at=0.0, endpoint="chat.completions", prompt_tokens=3)
                )
        finally:
            server.thaw()
            pipe.close()
            await client.aclose()

    before = lost()
    try:
        asyncio.run(append_while_redis_is_frozen())
    finally:
        server.stop()
    assert lost() - before == 1
    assert "usage event unbilled-1 lost" in caplog.text
