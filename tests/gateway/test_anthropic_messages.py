"""The official `anthropic` client against `/v1/messages` on a real web process and inferia-sim: text and tool use,
streamed and not, Anthropic's errors, limits, usage records and token counting."""

from __future__ import annotations

import json

import anthropic
import pytest
from django.conf import settings

from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.gateway.conftest import http
from tests.gateway.stand_ins import scripted_engine
from tests.gateway.test_policy_guardrails import tenant_on
from tests.gateway.test_policy_limits import tenant_with_policy
from tests.gateway.test_translated_send import streamed_through

MESSAGES = [{"role": "user", "content": "Say something."}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}


@pytest.fixture
def client(tenant, gateway):
    with anthropic.Anthropic(base_url=gateway.url, api_key=tenant.secret, max_retries=0) as sync_client:
        yield sync_client


def test_a_message_is_answered_with_text_and_usage(client):
    message = client.messages.create(
        model="gw-chat", max_tokens=5, system=[{"type": "text", "text": "Be brief."}], messages=MESSAGES
    )
    assert message.id.startswith("msg_")
    assert message.model == "gw-chat"
    assert [block.type for block in message.content] == ["text"]
    assert len(message.content[0].text.split()) == 5
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5
    assert message.usage.input_tokens > 0


def test_a_streamed_message_has_anthropics_events(client):
    with client.messages.stream(model="gw-chat", max_tokens=6, system="Be brief.", messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 6
    assert final.content[0].text == text
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 6
    assert final.usage.input_tokens > 0

    events = [
        event.type for event in client.messages.create(model="gw-chat", max_tokens=3, messages=MESSAGES, stream=True)
    ]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_the_raw_stream_carries_a_ping_and_event_names(tenant, gateway):
    status, headers, raw = http(
        "POST",
        f"{gateway.url}/v1/messages",
        body={"model": "gw-chat", "max_tokens": 2, "messages": MESSAGES, "stream": True},
        headers={"x-api-key": tenant.secret, "anthropic-version": "2023-06-01"},
    )
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    names = [line[len("event: ") :] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert headers["request-id"] == headers["x-request-id"]


def test_a_tool_use_round_trip(client):
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = client.messages.create(
        model="gw-chat", max_tokens=64, messages=asked, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert call.stop_reason == "tool_use"
    (block,) = call.content
    assert block.type == "tool_use"
    assert block.name == "get_weather"
    assert block.input == {"city": "sim", "unit": "celsius"}  # the schema's required properties, filled in

    answer = client.messages.create(
        model="gw-chat",
        max_tokens=4,
        tools=[WEATHER],
        messages=[
            *asked,
            {"role": "assistant", "content": [item.model_dump() for item in call.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "Sunny, 21."}]},
        ],
    )
    assert [item.type for item in answer.content] == ["text"]
    assert len(answer.content[0].text.split()) == 4


def test_a_streamed_tool_call_arrives_as_input_json_deltas(client):
    with client.messages.stream(
        model="gw-chat",
        max_tokens=64,
        messages=[{"role": "user", "content": "Please call get_weather for Oslo."}],
        tools=[WEATHER],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds  # the client's own event for an input_json_delta
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"city": "sim", "unit": "celsius"}


def test_tool_choice_none_and_a_named_tool(client):
    other = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
    plain = client.messages.create(
        model="gw-chat",
        max_tokens=3,
        messages=[{"role": "user", "content": "get_weather please"}],
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert [item.type for item in plain.content] == ["text"]
    named = client.messages.create(
        model="gw-chat",
        max_tokens=64,
        messages=MESSAGES,
        tools=[WEATHER, other],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert [(item.type, item.name, item.input) for item in named.content] == [("tool_use", "get_time", {})]


def test_a_bad_key_is_an_authentication_error(tenant, gateway):
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-inf-not-a-key", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as raised,
    ):
        bad.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES)
    assert raised.value.status_code == 401
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": raised.value.body["error"]["message"]},
    }


def test_x_api_key_and_bearer_must_name_the_same_key(tenant, gateway):
    def with_bearer(secret: str) -> anthropic.Anthropic:
        headers = {"Authorization": f"Bearer {secret}"}
        return anthropic.Anthropic(base_url=gateway.url, api_key=tenant.secret, default_headers=headers, max_retries=0)

    with with_bearer("sk-inf-another-key") as both, pytest.raises(anthropic.AuthenticationError):
        both.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES)
    with with_bearer(tenant.secret) as same:
        assert same.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES).usage.output_tokens == 2
    with anthropic.Anthropic(base_url=gateway.url, auth_token=tenant.secret, max_retries=0) as bearer:
        assert bearer.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES).usage.output_tokens == 2


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="no-such-model", max_tokens=2, messages=MESSAGES)
    assert raised.value.body["error"]["type"] == "not_found_error"
    assert "no-such-model" in raised.value.body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gw-chat", "messages": MESSAGES}, "max_tokens"),
        ({"model": "gw-chat", "max_tokens": 2, "messages": MESSAGES, "temperature": 1.5}, "temperature"),
        ({"model": "gw\x00chat", "max_tokens": 2, "messages": MESSAGES}, "model"),
        (
            {"model": "gw-chat", "max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
            "messages",
        ),
        (
            {
                "model": "gw-chat",
                "max_tokens": 2,
                "messages": MESSAGES,
                "tools": [{"name": "bad name", "input_schema": {}}],
            },
            "tools",
        ),
    ],
)
def test_bad_input_is_an_invalid_request_error(tenant, gateway, body, param):
    status, _, raw = http("POST", f"{gateway.url}/v1/messages", body=body, headers={"x-api-key": tenant.secret})
    assert status == 400
    error = json.loads(raw)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith(param)


def test_bad_input_with_a_bad_key_is_a_401(tenant, gateway):
    status, _, raw = http("POST", f"{gateway.url}/v1/messages", body={"model": "x"}, headers={"x-api-key": "sk-inf-no"})
    assert status == 401
    assert json.loads(raw)["error"]["type"] == "authentication_error"


def test_the_client_over_its_rate_limit_gets_a_rate_limit_error(transactional_db, sim, gateway, redis_cache):
    limited = tenant_with_policy(gateway, sim.url, requests_per_minute=1)
    with anthropic.Anthropic(base_url=gateway.url, api_key=limited.secret, max_retries=0) as client:
        client.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES)
        with pytest.raises(anthropic.RateLimitError) as raised:
            client.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES)
    assert raised.value.status_code == 429
    assert raised.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


def test_messages_are_metered_under_their_own_endpoint(client, tenant, redis_cache):
    client.messages.create(model="gw-chat", max_tokens=3, messages=MESSAGES)
    with client.messages.stream(model="gw-chat", max_tokens=4, messages=MESSAGES) as stream:
        stream.until_done()
    assert usage_stream_drain() == 2
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk).order_by("started_at")
    assert [(r.endpoint, r.streamed, r.completion_tokens, r.status_code) for r in records] == [
        ("messages", False, 3, 200),
        ("messages", True, 4, 200),
    ]
    assert records[0].deployment_id == tenant.deployment.pk


def test_count_tokens_answers_the_limits_bound_without_the_engine(client, tenant, redis_cache):
    from apps.gateway.messages import chat_document
    from apps.gateway.messages_schemas import CountTokensRequest
    from apps.policies.costs import prompt_tokens_upper_bound

    request = {"model": "gw-chat", "system": "Be brief.", "messages": MESSAGES, "tools": [WEATHER]}
    counted = client.messages.count_tokens(**request)
    expected = prompt_tokens_upper_bound(chat_document(CountTokensRequest.model_validate(request)))
    assert counted.input_tokens == expected
    assert redis_cache.xlen(settings.INFERIA_USAGE_STREAM) == 0  # nothing generated, nothing metered
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="no-such-model", messages=MESSAGES)


def test_a_matched_stop_sequence_and_the_engines_errors_translate():
    from apps.gateway.messages_out import error_document, message_document

    completion = {
        "id": "chatcmpl-abc",
        "model": "gw-chat",
        "choices": [{"message": {"content": "one two"}, "finish_reason": "stop", "stop_reason": "END"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    message = json.loads(message_document(json.dumps(completion).encode(), ("END",)))
    assert (message["id"], message["stop_reason"], message["stop_sequence"]) == ("msg_abc", "stop_sequence", "END")
    assert message["usage"] == {"input_tokens": 7, "output_tokens": 2}
    unmatched = json.loads(message_document(json.dumps(completion).encode(), ()))
    assert (unmatched["stop_reason"], unmatched["stop_sequence"]) == ("end_turn", None)

    engine_error = json.dumps({"error": {"message": "context too long", "type": "BadRequestError"}}).encode()
    assert json.loads(error_document(400, engine_error)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "context too long"},
    }
    assert json.loads(error_document(503, b"{}"))["error"]["type"] == "overloaded_error"
    assert json.loads(error_document(502, b"not json"))["error"] == {"type": "api_error", "message": "not json"}


def test_an_error_that_ends_a_started_stream_becomes_an_error_event():
    from apps.gateway.errors import upstream_failed
    from apps.gateway.messages_out import MessagesSend

    out = MessagesSend(None)
    chunk = {"id": "chatcmpl-1", "model": "gw-chat", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    sent = streamed_through(out, [b"data: " + json.dumps(chunk).encode() + b"\n\n", upstream_failed().sse_event()])
    text = b"".join(message.get("body", b"") for message in sent).decode()
    names = [line[len("event: ") :] for line in text.splitlines() if line.startswith("event: ")]
    assert names == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    error = json.loads(text.rstrip().splitlines()[-1][len("data: ") :])
    assert error == {"type": "error", "error": {"type": "api_error", "message": "The model's engine failed to answer."}}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_a_block_in_the_wrong_role_is_an_invalid_request_error(tenant, gateway, path):
    misplaced = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    body = {"model": "gw-chat", "max_tokens": 2, "messages": [{"role": "user", "content": [misplaced]}]}
    status, _, raw = http("POST", f"{gateway.url}{path}", body=body, headers={"x-api-key": tenant.secret})
    assert status == 400
    assert json.loads(raw)["error"] == {
        "type": "invalid_request_error",
        "message": "tool_use blocks belong to assistant messages.",
    }


def test_messages_are_timed_under_their_own_route(client, gateway):
    from tests.gateway.test_metrics import scrape, value

    name = "inferia_gateway_request_duration_seconds_count"
    labels = {"model": "gw-chat", "route": "messages", "status_class": "2xx"}
    before = value(scrape(gateway.url), name, **labels)
    client.messages.create(model="gw-chat", max_tokens=2, messages=MESSAGES)
    client.messages.count_tokens(model="gw-chat", messages=MESSAGES)
    samples = scrape(gateway.url)
    assert value(samples, name, **labels) == before + 1
    assert value(samples, name, **{**labels, "route": "messages.count_tokens"}) >= 1


def test_a_body_over_the_gateways_limit_is_refused_in_anthropics_shape(tenant, gateway):
    from tests.gateway.conftest import MAX_BODY_BYTES

    big = {"model": "gw-chat", "max_tokens": 2, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
    status, _, raw = http("POST", f"{gateway.url}/v1/messages", body=big, headers={"x-api-key": tenant.secret})
    assert status == 413
    assert json.loads(raw)["error"]["type"] == "request_too_large"


def test_a_json_schema_output_format_reaches_the_engine_as_a_response_format(transactional_db, gateway, redis_cache):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    with scripted_engine(['{"city": ', '"Paris"}']) as engine:
        tenant = tenant_on(gateway, engine.url)
        with anthropic.Anthropic(base_url=gateway.url, api_key=tenant.secret, max_retries=0) as scripted:
            message = scripted.messages.create(
                model="gw-scripted",
                max_tokens=16,
                messages=MESSAGES,
                output_config={"format": {"type": "json_schema", "schema": schema}},
            )
            with pytest.raises(anthropic.BadRequestError) as refused:
                scripted.messages.create(
                    model="gw-scripted", max_tokens=16, messages=MESSAGES, output_config={"format": {"type": "xml"}}
                )
    assert json.loads(message.content[0].text) == {"city": "Paris"}
    (received,) = engine.received
    assert received["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert refused.value.body["error"]["type"] == "invalid_request_error"
