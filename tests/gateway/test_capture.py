"""Prompt and answer capture through the real gateway: nothing on the usage event of an organisation that did not opt
in; once it opts in (every gateway learns it within a second), the request's texts and the answer the client got go
on the event, and the worker stores them masked; opting out stops it the same way. Failed requests record the
message the client was told."""

from __future__ import annotations

import json

from django.conf import settings

from apps.orgs.services import organization_update
from apps.usage.events import EVENT_FIELD
from apps.usage.models import RequestCapture, UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.gateway.conftest import http
from tests.kit.waiting import eventually

PROMPT = "Write to jane.doe@example.com about the launch."
CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}


def _events(redis_cache) -> list[dict]:
    return [
        json.loads(fields[EVENT_FIELD.encode()]) for _id, fields in redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    ]


def _last_event_after(redis_cache, gateway, secret, body) -> dict:
    redis_cache.delete(settings.INFERIA_USAGE_STREAM)
    status, _headers, _answer = http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret)
    assert status == 200
    return _events(redis_cache)[-1]


def _streamed_text(raw: bytes) -> str:
    text = ""
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    return text


def test_no_capture_leaves_for_an_organisation_that_did_not_opt_in(tenant, gateway, redis_cache):
    event = _last_event_after(redis_cache, gateway, tenant.secret, {**CHAT, "stream": True})
    assert "cap" not in event
    assert PROMPT not in json.dumps(event)
    usage_stream_drain()
    assert not RequestCapture.objects.exists()


def test_an_opted_in_organisation_gets_its_prompt_and_answer_kept_masked(tenant, gateway, redis_cache):
    organization_update(organization=tenant.organization, changes={"capture_prompts": True}, actor=None)
    eventually(
        lambda: _last_event_after(redis_cache, gateway, tenant.secret, CHAT).get("cap") is not None,
        timeout=5,
        what="the gateway learning the opt-in",
    )
    redis_cache.delete(settings.INFERIA_USAGE_STREAM)
    status, headers, raw = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "stream": True}, secret=tenant.secret
    )
    assert status == 200
    (event,) = _events(redis_cache)
    assert event["cap"]["p"] == f"user: {PROMPT}"
    assert event["cap"]["a"] == _streamed_text(raw) != ""
    usage_stream_drain()
    capture = RequestCapture.objects.get(usage_record__request_id=headers["x-request-id"])
    assert capture.prompt == "user: Write to [EMAIL] about the launch."
    assert capture.answer == event["cap"]["a"]

    event = _last_event_after(redis_cache, gateway, tenant.secret, CHAT)  # a complete answer too
    assert event["cap"]["a"]

    organization_update(organization=tenant.organization, changes={"capture_prompts": False}, actor=None)
    eventually(
        lambda: _last_event_after(redis_cache, gateway, tenant.secret, CHAT).get("cap") is None,
        timeout=5,
        what="the gateway learning the opt-out",
    )


def test_a_failed_request_records_what_the_client_was_told(tenant, gateway, redis_cache):
    status, _headers, body = http(
        "POST", f"{gateway.url}/v1/chat/completions", body={**CHAT, "model": "no-such"}, secret=tenant.secret
    )
    assert status == 404
    (event,) = _events(redis_cache)
    assert event["msg"] == json.loads(body)["error"]["message"]
    usage_stream_drain()
    record = UsageRecord.objects.get(organization_id=tenant.organization.pk)
    assert record.error_code == "model_not_found"
    assert record.error_message == "The model 'no-such' does not exist or you do not have access to it."
