"""The simulator answers with a tool call when the request requires one or the user names a tool, deterministically,
with arguments that fit the tool's schema; otherwise it answers with text as before."""

from __future__ import annotations

import json

import openai
import pytest

from inferia_sim.tools import arguments_for
from tests.sim.conftest import chat_body, connect, metrics

MODEL = "inferia/sim-model"
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string"},
                "limit": {"type": "integer"},
                "filters": {"type": "object", "properties": {"lang": {"enum": ["en", "fr"]}}, "required": ["lang"]},
                "optional": {"type": "string"},
            },
            "required": ["query", "limit", "filters"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture
def client(sim):
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


def test_the_arguments_fill_the_required_properties():
    assert arguments_for(LOOKUP["function"]["parameters"]) == {"query": "sim", "limit": 1, "filters": {"lang": "en"}}
    assert arguments_for({"type": ["null", "boolean"]}) is True
    assert arguments_for("not a schema") is None


def test_required_calls_the_first_tool_whole_and_streamed(client):
    messages = [{"role": "user", "content": "Hi"}]
    whole = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[LOOKUP, CLOCK], tool_choice="required", max_tokens=50
    )
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "sim", "limit": 1, "filters": {"lang": "en"}}

    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=[LOOKUP, CLOCK],
            tool_choice={"type": "function", "function": {"name": "clock"}},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or ()]
    assert calls[0].function.name == "clock"
    assert "".join(call.function.arguments or "" for call in calls) == "{}"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens >= 1


def test_a_named_tool_is_called_under_auto_but_never_under_none(client):
    asked = [{"role": "user", "content": "Please use clock now."}]
    auto = client.chat.completions.create(model=MODEL, messages=asked, tools=[LOOKUP, CLOCK], max_tokens=20)
    assert auto.choices[0].message.tool_calls[0].function.name == "clock"
    none = client.chat.completions.create(
        model=MODEL, messages=asked, tools=[LOOKUP, CLOCK], tool_choice="none", max_tokens=3
    )
    assert none.choices[0].message.content
    assert not none.choices[0].message.tool_calls


def test_a_tool_result_is_answered_with_text(client):
    messages = [
        {"role": "user", "content": "use clock"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "clock", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "noon"},
    ]
    answer = client.chat.completions.create(model=MODEL, messages=messages, tools=[CLOCK], max_tokens=4)
    assert answer.choices[0].finish_reason == "length"
    assert len(answer.choices[0].message.content.split()) == 4


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_keeps_the_connection_and_counts_as_a_finished_request(sim, stream):
    """A client that reuses its connection after a tool call (every pooled HTTP client does) is answered on it, and
    the call counts as a request that stopped, as vLLM counts it (`tool_calls` is the API's name, not the engine's)."""
    before = metrics(sim.url)
    body = json.dumps({**chat_body(max_tokens=20), "tools": [CLOCK], "tool_choice": "required", "stream": stream})
    connection = connect(sim.url)
    try:
        for _ in range(2):
            connection.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200
            assert b"tool_calls" in response.read()
            assert response.getheader("connection") != "close"
    finally:
        connection.close()
    after = metrics(sim.url)
    stopped = next(key for key in after if key.startswith('vllm:request_success_total{finished_reason="stop"'))
    assert after[stopped] - before[stopped] == 2
