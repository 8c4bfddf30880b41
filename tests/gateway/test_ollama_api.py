"""The official `ollama` client against `/ollama` on a real web process and inferia-sim: chat and generate, streamed
and not, embeddings, the model listing (only the key's own models), tool calls, JSON formats, Ollama's errors,
limits, usage records and metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import ollama
import pytest
import time_machine

from apps.gateway.ollama_out import _now
from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import scripted_engine
from tests.gateway.test_policy_guardrails import tenant_on
from tests.gateway.test_policy_limits import tenant_with_policy
from tests.gateway.test_translated_send import streamed_through

MESSAGES = [{"role": "user", "content": "Say something."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
CITY = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "population": {"type": "integer"}, "capital": {"type": "boolean"}},
    "required": ["name", "population", "capital"],
}


def ollama_client(gateway, secret: str, **headers: str) -> ollama.Client:
    return ollama.Client(host=gateway.url + "/ollama", headers={"Authorization": f"Bearer {secret}", **headers})


@pytest.fixture
def client(tenant, gateway):
    with ollama_client(gateway, tenant.secret) as sync_client:
        yield sync_client


def _ollama_error(status: int, raw: bytes) -> str:
    document = json.loads(raw)
    assert list(document) == ["error"]
    assert isinstance(document["error"], str)
    return document["error"]


def test_lines_carry_the_time_in_utc_to_the_millisecond():
    """Each line of a stream carries the time, formatted once a millisecond (the date and time of day once a second),
    and never lagging behind the clock by a millisecond or more."""
    for moment, written in (
        (datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 678999, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 679000, tzinfo=UTC), "2026-01-02T03:04:05.679Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-02T03:04:05.999Z"),
        (datetime(2026, 1, 2, 3, 4, 6, 5, tzinfo=UTC), "2026-01-02T03:04:06.000Z"),
        (datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC), "2027-12-31T23:59:59.000Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC), "2026-01-02T03:04:05.678Z"),  # back again
    ):
        with time_machine.travel(moment, tick=False):
            assert _now() == written


# --- Chat and generate ---------------------------------------------------------------------------------------------


def test_a_chat_is_answered_with_ollamas_final_object(client):
    answer = client.chat(model="gw-chat", messages=MESSAGES, stream=False, options={"num_predict": 5})
    assert answer.model == "gw-chat"
    assert answer.message.role == "assistant"
    assert len(answer.message.content.split()) == 5
    assert answer.done is True
    assert answer.done_reason == "length"
    assert answer.eval_count == 5
    assert answer.prompt_eval_count > 0
    assert answer.total_duration >= answer.eval_duration > 0
    assert answer.created_at.endswith("Z")


def test_a_streamed_chat_is_newline_delimited_json_that_ends_done(client, tenant, gateway):
    parts = list(client.chat(model="gw-chat", messages=MESSAGES, stream=True, options={"num_predict": 6}))
    assert [part.done for part in parts[:-1]] == [False] * (len(parts) - 1)
    final = parts[-1]
    assert (final.done, final.done_reason, final.eval_count) == (True, "length", 6)
    assert final.prompt_eval_count > 0
    assert len("".join(part.message.content for part in parts).split()) == 6

    # A body without `stream` streams, as Ollama's server does.
    status, headers, raw = http(
        "POST",
        f"{gateway.url}/ollama/api/chat",
        body={"model": "gw-chat", "messages": MESSAGES, "options": {"num_predict": 2}},
        secret=tenant.secret,
    )
    assert status == 200
    assert headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert [line["done"] for line in lines] == [False, False, True]
    assert lines[-1]["eval_count"] == 2


def test_generate_answers_a_prompt_whole_streamed_and_raw(client):
    answer = client.generate(model="gw-chat", prompt="Once upon a time", system="Be brief.", options={"num_predict": 4})
    assert len(answer.response.split()) == 4
    assert (answer.done, answer.done_reason, answer.eval_count) == (True, "length", 4)

    parts = list(client.generate(model="gw-chat", prompt="Once upon a time", stream=True, options={"num_predict": 3}))
    assert len("".join(part.response for part in parts).split()) == 3
    assert parts[-1].done
    assert parts[-1].eval_count == 3

    raw = client.generate(model="gw-chat", prompt="Once upon a time", raw=True, options={"num_predict": 3})
    assert len(raw.response.split()) == 3
    assert raw.prompt_eval_count == 4  # the prompt as given, without a chat template around it
    raw_parts = list(client.generate(model="gw-chat", prompt="Once", raw=True, stream=True, options={"num_predict": 2}))
    assert len("".join(part.response for part in raw_parts).split()) == 2
    assert raw_parts[-1].eval_count == 2


def test_options_carry_over_and_stop_ends_the_answer(client):
    answer = client.chat(
        model="gw-chat",
        messages=MESSAGES,
        options={"temperature": 0.2, "top_p": 0.9, "top_k": 20, "seed": 7, "num_predict": -1, "stop": ["zzz"]},
    )
    assert answer.done_reason == "stop"  # no bound: the engine stops by itself
    assert answer.eval_count == 64  # inferia-sim's default length


def test_a_request_without_messages_loads_the_model(client):
    assert client.chat(model="gw-chat").done_reason == "load"
    assert client.generate(model="gw-chat").done_reason == "load"
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="gw-missing")
    assert raised.value.status_code == 404


# --- Embeddings and models -----------------------------------------------------------------------------------------


def test_embed_answers_one_vector_per_input(client):
    answer = client.embed(model="gw-chat", input=["the cat sat", "the cat sat", "quantum flux"])
    first, second, third = answer.embeddings
    assert len(first) == 384
    assert first == second != third
    assert answer.prompt_eval_count > 0
    assert len(client.embed(model="gw-chat", input="one", dimensions=16).embeddings[0]) == 16


def test_tags_lists_only_the_models_the_key_may_use(client, tenant, gateway, sim):
    globex = OrganizationFactory(name="Globex", slug="globex")
    make_deployment(globex, "gw-other", [sim.url])
    _, globex_secret = make_key(globex)
    wait_until_served(gateway, globex_secret, "gw-other")  # the gateway knows it: its absence below means something

    listed = client.list().models
    assert [model.model for model in listed] == ["gw-chat"]
    assert listed[0].modified_at is not None
    assert len(listed[0].digest) == 64
    with ollama_client(gateway, globex_secret) as other:
        assert [model.model for model in other.list().models] == ["gw-other"]

    with pytest.raises(ollama.ResponseError) as raised:
        client.show("gw-other")
    assert raised.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="gw-other", messages=MESSAGES, options={"num_predict": 2})
    assert raised.value.status_code == 404


def test_show_describes_a_model_the_key_may_use(client):
    shown = client.show("gw-chat")
    assert "completion" in shown.capabilities
    assert shown.modified_at is not None
    with pytest.raises(ollama.ResponseError) as raised:
        client.show("gw-missing")
    assert raised.value.status_code == 404
    assert "gw-missing" in raised.value.error


def test_ollamas_openai_compatible_path_is_inferias_v1(tenant, gateway):
    import openai

    with openai.OpenAI(base_url=gateway.url + "/ollama/v1", api_key=tenant.secret, max_retries=0) as client:
        assert [model.id for model in client.models.list()] == ["gw-chat"]
        answer = client.chat.completions.create(model="gw-chat", messages=MESSAGES, max_tokens=3)
    assert answer.usage.completion_tokens == 3


def test_version_and_the_root_answer_like_ollamas_server(tenant, gateway):
    status, _, raw = http("GET", f"{gateway.url}/ollama/api/version")
    assert status == 200
    assert json.loads(raw)["version"].count(".") == 2
    status, headers, raw = http("GET", f"{gateway.url}/ollama")
    assert (status, raw) == (200, b"Ollama is running")
    assert headers["content-type"].startswith("text/plain")


# --- Tools and formats ---------------------------------------------------------------------------------------------


def test_a_tool_call_round_trip(client):
    asked = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    call = client.chat(model="gw-chat", messages=asked, tools=[WEATHER], options={"num_predict": 64})
    (tool_call,) = call.message.tool_calls
    assert tool_call.function.name == "get_weather"
    assert tool_call.function.arguments == {"city": "sim", "unit": "celsius"}  # an object, as Ollama gives it
    assert call.done_reason == "stop"

    answer = client.chat(
        model="gw-chat",
        tools=[WEATHER],
        messages=[
            *asked,
            call.message,
            {"role": "tool", "content": "Sunny, 21.", "tool_name": "get_weather"},
        ],
        options={"num_predict": 4},
    )
    assert not answer.message.tool_calls
    assert len(answer.message.content.split()) == 4


def test_a_streamed_tool_call_arrives_whole_and_a_python_function_is_a_tool(client):
    def get_time(zone: str) -> str:
        """The time in a zone.

        Args:
          zone: The time zone.

        Returns:
          The time.
        """
        return "noon"

    parts = list(
        client.chat(
            model="gw-chat",
            messages=[{"role": "user", "content": "Call get_time for Oslo."}],
            tools=[get_time],
            stream=True,
        )
    )
    calls = [call for part in parts for call in part.message.tool_calls or ()]
    assert [(call.function.name, call.function.arguments) for call in calls] == [("get_time", {"zone": "sim"})]
    assert parts[-1].done
    assert parts[-1].eval_count >= 1


def test_a_json_schema_format_is_answered_with_json_that_fits_it(client):
    expected = {"name": "sim", "population": 1, "capital": True}
    answer = client.chat(model="gw-chat", messages=MESSAGES, format=CITY)
    assert json.loads(answer.message.content) == expected
    streamed = list(client.generate(model="gw-chat", prompt="Describe Paris.", format=CITY, stream=True))
    assert json.loads("".join(part.response for part in streamed)) == expected
    assert json.loads(client.chat(model="gw-chat", messages=MESSAGES, format="json").message.content) == {}


def test_the_engine_receives_the_chat_completion_the_request_means(transactional_db, gateway, redis_cache):
    with scripted_engine(['{"name": ', '"Paris"}']) as engine:
        tenant = tenant_on(gateway, engine.url)
        with ollama_client(gateway, tenant.secret) as client:
            answer = client.chat(
                model="gw-scripted",
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Weather?"},
                    {"role": "assistant", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"a": 1}}}]},
                    {"role": "tool", "content": "Sunny.", "tool_name": "get_weather"},
                ],
                tools=[WEATHER],
                format=CITY,
                options={"temperature": 0.5, "seed": 3, "num_predict": 12, "stop": ["END"], "repeat_penalty": 1.1},
                keep_alive="5m",
            )
    assert answer.message.content == '{"name": "Paris"}'
    (received,) = engine.received
    assert received["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_2_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"a": 1}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_2_0", "content": "Sunny."},
    ]
    assert received["tools"] == [WEATHER]
    assert received["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "format", "schema": CITY, "strict": True},
    }
    assert {name: received[name] for name in ("temperature", "seed", "max_tokens", "stop", "repetition_penalty")} == {
        "temperature": 0.5,
        "seed": 3,
        "max_tokens": 12,
        "stop": ["END"],
        "repetition_penalty": 1.1,
    }
    assert "keep_alive" not in received
    assert "stream" not in received


# --- Errors --------------------------------------------------------------------------------------------------------


def test_a_bad_or_missing_key_is_a_401_in_ollamas_shape(tenant, gateway):
    with ollama_client(gateway, "sk-inf-not-a-key") as bad, pytest.raises(ollama.ResponseError) as raised:
        bad.chat(model="gw-chat", messages=MESSAGES)
    assert raised.value.status_code == 401
    assert "API key" in raised.value.error
    for path, method in [("/ollama/api/tags", "GET"), ("/ollama/api/show", "POST"), ("/ollama/api/embed", "POST")]:
        status, _, raw = http(method, f"{gateway.url}{path}", body={"model": "gw-chat", "input": "x"})
        assert status == 401
        _ollama_error(status, raw)


def test_only_one_bearer_key_is_read(tenant, gateway):
    from tests.gateway.test_duplicate_authorization import request

    body = {"model": "gw-chat", "messages": MESSAGES, "stream": False, "options": {"num_predict": 2}}
    path = "/ollama/api/chat"
    status, _, _ = http("POST", f"{gateway.url}{path}", body=body, headers={"x-api-key": tenant.secret})
    assert status == 401  # Ollama's clients send the key as a bearer token only
    with ollama_client(gateway, tenant.secret, **{"x-api-key": "sk-inf-another-key"}) as both:
        assert both.chat(**body).eval_count == 2  # x-api-key is not read here, so it cannot contradict the bearer
    _, other_secret = make_key(tenant.organization)
    pair = [f"Bearer {tenant.secret}", f"Bearer {other_secret}"]
    status, document = request(gateway, "POST", path, pair, json.dumps(body).encode())
    assert status == 401
    assert list(document) == ["error"]


def test_an_unknown_model_is_a_404(client):
    with pytest.raises(ollama.ResponseError) as raised:
        client.chat(model="no-such-model", messages=MESSAGES)
    assert raised.value.status_code == 404
    assert "no-such-model" in raised.value.error
    with pytest.raises(ollama.ResponseError) as raised:
        list(client.generate(model="no-such-model", prompt="hi", stream=True))
    assert raised.value.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("chat", {"model": "gw-chat", "messages": MESSAGES, "options": {"temperature": 5}}, "options.temperature"),
        ("chat", {"model": "gw-chat", "messages": MESSAGES, "options": {"num_predict": 0}}, "options.num_predict"),
        ("chat", {"model": "gw\x00chat", "messages": MESSAGES}, "model"),
        ("chat", {"model": "gw-chat", "messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
        ("chat", {"model": "gw-chat", "messages": [{"role": "tool", "content": "21"}]}, "messages.0"),
        ("chat", {"model": "gw-chat", "messages": MESSAGES, "stream": "yes"}, "stream"),
        ("chat", {"model": "gw-chat", "messages": MESSAGES, "format": "yaml"}, "format"),
        (
            "chat",
            {"model": "gw-chat", "messages": [{"role": "user", "content": "hi", "images": ["iVBORw0KGgo="]}]},
            "messages.0.images",
        ),
        ("chat", {"model": "gw-chat", "messages": MESSAGES, "tools": [{"function": {"name": "bad name"}}]}, "tools"),
        ("generate", {"model": "gw-chat", "prompt": "hi", "suffix": "end"}, "suffix"),
        ("generate", {"model": "gw-chat", "prompt": "hi", "context": [1, 2]}, "context"),
        ("embed", {"model": "gw-chat", "input": []}, "input"),
        ("embed", {"model": "gw-chat"}, "input"),
        ("show", {}, "model"),
    ],
)
def test_bad_input_is_a_400_in_ollamas_shape(tenant, gateway, path, body, param):
    status, headers, raw = http("POST", f"{gateway.url}/ollama/api/{path}", body=body, secret=tenant.secret)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert _ollama_error(status, raw).startswith(param)


def test_bad_input_with_a_bad_key_is_a_401(tenant, gateway):
    status, _, raw = http("POST", f"{gateway.url}/ollama/api/chat", body={"model": 1}, secret="sk-inf-no")
    assert status == 401
    _ollama_error(status, raw)


def test_unknown_paths_and_methods_answer_in_ollamas_shape(tenant, gateway):
    status, _, raw = http("POST", f"{gateway.url}/ollama/api/pull", body={"model": "gw-chat"}, secret=tenant.secret)
    assert status == 404
    assert "/ollama/api/pull" in _ollama_error(status, raw)
    status, _, raw = http("GET", f"{gateway.url}/ollama/api/chat", secret=tenant.secret)
    assert status == 405
    _ollama_error(status, raw)


def test_the_client_over_its_rate_limit_gets_a_429(transactional_db, sim, gateway, redis_cache):
    limited = tenant_with_policy(gateway, sim.url, requests_per_minute=1)
    with ollama_client(gateway, limited.secret) as client:
        client.chat(model="gw-chat", messages=MESSAGES, options={"num_predict": 2})
        with pytest.raises(ollama.ResponseError) as raised:
            list(client.chat(model="gw-chat", messages=MESSAGES, stream=True, options={"num_predict": 2}))
    assert raised.value.status_code == 429
    assert "limit" in raised.value.error.lower()
    body = {"model": "gw-chat", "messages": MESSAGES, "options": {"num_predict": 2}}
    status, headers, raw = http("POST", f"{gateway.url}/ollama/api/chat", body=body, secret=limited.secret)
    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 60
    _ollama_error(status, raw)


def test_a_body_over_the_gateways_limit_is_a_413_in_ollamas_shape(tenant, gateway):
    from tests.gateway.conftest import MAX_BODY_BYTES

    big = {"model": "gw-chat", "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
    status, _, raw = http("POST", f"{gateway.url}/ollama/api/chat", body=big, secret=tenant.secret)
    assert status == 413
    _ollama_error(status, raw)


def test_an_error_that_ends_a_started_stream_is_its_last_line():
    from apps.gateway.errors import upstream_failed
    from apps.gateway.ollama_out import CHAT, OllamaSend

    out = OllamaSend(None, answers=CHAT)
    chunk = {"id": "chatcmpl-1", "model": "gw-chat", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
    sent = streamed_through(out, [b"data: " + json.dumps(chunk).encode() + b"\n\n", upstream_failed().sse_event()])
    assert sent[0]["headers"][0] == (b"content-type", b"application/x-ndjson")
    lines = [json.loads(line) for line in b"".join(m.get("body", b"") for m in sent).decode().splitlines()]
    assert lines[0]["message"] == {"role": "assistant", "content": "Hi"}
    assert lines[-1] == {"error": "The model's engine failed to answer."}
    assert len(lines) == 2


# --- Usage and metrics ---------------------------------------------------------------------------------------------


def test_requests_are_metered_under_their_own_endpoint_names(client, tenant, redis_cache):
    client.chat(model="gw-chat", messages=MESSAGES, options={"num_predict": 3})
    list(client.chat(model="gw-chat", messages=MESSAGES, stream=True, options={"num_predict": 4}))
    client.generate(model="gw-chat", prompt="hi", options={"num_predict": 2})
    client.embed(model="gw-chat", input="hi")
    assert usage_stream_drain() == 4
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk).order_by("started_at")
    assert [(r.endpoint, r.streamed, r.completion_tokens, r.status_code) for r in records] == [
        ("ollama.chat", False, 3, 200),
        ("ollama.chat", True, 4, 200),
        ("ollama.generate", False, 2, 200),
        ("ollama.embed", False, 0, 200),
    ]
    assert records[0].deployment_id == tenant.deployment.pk
    assert records[3].prompt_tokens > 0


def test_requests_are_timed_under_their_own_routes(client, gateway):
    from tests.gateway.test_metrics import scrape, value

    name = "inferia_gateway_request_duration_seconds_count"
    labels = {"model": "gw-chat", "route": "ollama.chat", "status_class": "2xx"}
    before = value(scrape(gateway.url), name, **labels)
    client.chat(model="gw-chat", messages=MESSAGES, options={"num_predict": 2})
    client.show("gw-chat")
    samples = scrape(gateway.url)
    assert value(samples, name, **labels) == before + 1
    assert value(samples, name, **{**labels, "route": "ollama.show"}) >= 1
