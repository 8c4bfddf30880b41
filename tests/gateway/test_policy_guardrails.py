"""Guardrails through the real web process: a blocked prompt never reaches the engine (and the error never echoes
it), a redacted one reaches it redacted, and a secret the engine streams split over two chunks is still caught."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import Tenant, http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import scripted_engine

SECRET = "sk-proj-AbC9dEfGh1JkLmN0pQrStUvWx"
# The engine's answer, with the secret split over two deltas.
LEAKY_ANSWER = ["Your key is sk-proj-Ab", "C9dEfGh1JkLmN0pQrStUv", "Wx and more."]


def tenant_on(gateway, engine_url: str, **profile_fields) -> Tenant:
    """An organisation served by `engine_url` as `gw-scripted`, under a guardrail profile made of `profile_fields`
    (none: the built-in default profile)."""
    from apps.policies.services import guardrail_profile_create, policy_create

    organization = OrganizationFactory(name="Guarded", slug="guarded")
    if profile_fields:
        profile = guardrail_profile_create(actor=None, organization=organization, name="strict", **profile_fields)
        policy_create(actor=None, organization=organization, guardrail_profile=profile)
    key, secret = make_key(organization)
    deployment, replicas = make_deployment(organization, "gw-scripted", [engine_url])
    wait_until_served(gateway, secret, "gw-scripted")
    return Tenant(organization, key, secret, deployment, replicas[0])


def chat_body(content: str, **fields) -> dict:
    return {"model": "gw-scripted", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **fields}


def streamed_text(raw: bytes) -> tuple[str, list[dict]]:
    """The content of a streamed answer, and any error events in it."""
    text, failures = [], []
    for event in raw.split(b"\n\n"):
        if not event.startswith(b"data: ") or event == b"data: [DONE]":
            continue
        document = json.loads(event[6:])
        if "error" in document:
            failures.append(document["error"])
        for choice in document.get("choices", []):
            text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text), failures


def stream(gateway, secret: str, body: dict) -> bytes:
    async def read() -> bytes:
        async with aiohttp.ClientSession() as session:
            headers = {"authorization": f"Bearer {secret}"}
            async with session.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as response:
                assert response.status == 200
                return await response.read()

    return asyncio.run(read())


def test_a_blocked_prompt_is_refused_without_echoing_it(transactional_db, gateway, redis_cache):
    with scripted_engine(["fine"]) as engine:
        tenant = tenant_on(gateway, engine.url, input_actions={"email": "block"})
        status, _, raw = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=chat_body("mail jane.doe@example.com"),
            secret=tenant.secret,
        )  # fmt: skip
        assert engine.received == []

    error = json.loads(raw)["error"]
    assert status == 400
    assert error["code"] == "guardrail_violation"
    assert "email" in error["message"]
    assert b"jane.doe" not in raw
    usage_stream_drain()
    record = UsageRecord.objects.get(organization_id=tenant.organization.pk)
    assert (record.outcome, record.error_code) == ("denied", "guardrail_violation")
    assert record.guardrails == [{"category": "email", "action": "block", "count": 1}]


def test_the_default_profile_redacts_a_secret_before_the_prompt_leaves(transactional_db, gateway, redis_cache):
    with scripted_engine(["fine"]) as engine:
        tenant = tenant_on(gateway, engine.url)
        status, _, _ = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=chat_body(f"use {SECRET} please"), secret=tenant.secret
        )
        (received,) = engine.received

    assert status == 200
    assert received["messages"][0]["content"] == "use [SECRET] please"
    assert SECRET not in json.dumps(received)
    usage_stream_drain()
    record = UsageRecord.objects.get(organization_id=tenant.organization.pk)
    assert record.guardrails == [{"category": "secret", "action": "redact", "count": 1}]


def test_a_secret_split_over_two_streamed_chunks_is_redacted(transactional_db, gateway, redis_cache):
    with scripted_engine(LEAKY_ANSWER) as engine:
        tenant = tenant_on(gateway, engine.url, output_actions={"secret": "redact"})
        raw = stream(gateway, tenant.secret, chat_body("what is my key?", stream=True))

    text, failures = streamed_text(raw)
    assert text == "Your key is [SECRET] and more."
    assert failures == []
    assert b"sk-proj" not in raw
    assert raw.endswith(b"data: [DONE]\n\n")


def test_a_secret_in_the_stream_can_end_it_with_an_error_event(transactional_db, gateway, redis_cache):
    with scripted_engine(LEAKY_ANSWER) as engine:
        tenant = tenant_on(gateway, engine.url, output_actions={"secret": "stop"})
        raw = stream(gateway, tenant.secret, chat_body("what is my key?", stream=True))

    text, failures = streamed_text(raw)
    assert text == "Your key is "
    assert [failure["code"] for failure in failures] == ["guardrail_violation"]
    assert b"sk-proj" not in raw
    assert b"[DONE]" not in raw


def test_a_whole_answer_is_scanned_too(transactional_db, gateway, redis_cache):
    with scripted_engine(LEAKY_ANSWER) as engine:
        tenant = tenant_on(gateway, engine.url, output_actions={"secret": "redact"})
        status, _, raw = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=chat_body("what is my key?"), secret=tenant.secret
        )

    assert status == 200
    assert json.loads(raw)["choices"][0]["message"]["content"] == "Your key is [SECRET] and more."


def test_toxicity_blocks_a_prompt_and_redacts_a_streamed_sentence(transactional_db, gateway, redis_cache):
    answer = ["Sure. You are a worth", "less idiot. Here is", " the plan."]
    with scripted_engine(answer) as engine:
        tenant = tenant_on(
            gateway, engine.url, input_actions={"toxicity": "block"}, output_actions={"toxicity": "redact"}
        )
        status, _, raw = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=chat_body("Shut up, you stupid moron."),
            secret=tenant.secret,
        )  # fmt: skip
        assert engine.received == []
        streamed = stream(gateway, tenant.secret, chat_body("Summarise the plan, please.", stream=True))

    assert status == 400
    assert json.loads(raw)["error"]["code"] == "guardrail_violation"
    assert b"moron" not in raw
    text, failures = streamed_text(streamed)
    assert text == "Sure. [TOXICITY] Here is the plan."
    assert failures == []


def test_a_plug_in_scanner_redacts_streamed_and_whole_answers(transactional_db, gateway, redis_cache):
    """A scanner class named in the profile runs in the web process on the engine's output, sentence by sentence."""
    answer = ["The forecast is dread", "ful today. Take", " an umbrella."]
    scanner = {"class": "tests.policies.test_guardrails.KeywordScanner", "options": {"word": "dreadful"}}
    with scripted_engine(answer) as engine:
        tenant = tenant_on(gateway, engine.url, scanners=[scanner], output_actions={"harshness": "redact"})
        streamed = stream(gateway, tenant.secret, chat_body("How is the weather?", stream=True))
        status, _, whole = http(
            "POST", f"{gateway.url}/v1/chat/completions", body=chat_body("And now?"), secret=tenant.secret
        )

    text, failures = streamed_text(streamed)
    assert text == "The forecast is [HARSHNESS] today. Take an umbrella."
    assert failures == []
    assert b"dread" not in streamed.replace(b"[HARSHNESS]", b"")
    assert status == 200
    assert (
        json.loads(whole)["choices"][0]["message"]["content"] == "The forecast is [HARSHNESS] today. Take an umbrella."
    )
