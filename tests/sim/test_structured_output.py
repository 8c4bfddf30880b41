"""The simulator honours `response_format`: a JSON schema is answered with JSON that fits it (the required
properties filled in, as for tool arguments), `json_object` with a JSON object, whole and streamed; a tool call
still comes first."""

from __future__ import annotations

import json

import openai
import pytest

from inferia_sim.tools import structured_text

MODEL = "inferia/sim-model"
CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "population": {"type": "integer"},
        "capital": {"type": "boolean"},
        "continent": {"enum": ["europe", "asia"]},
        "nickname": {"type": "string"},
    },
    "required": ["name", "population", "capital", "continent"],
}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY}}
EXPECTED = {"name": "sim", "population": 1, "capital": True, "continent": "europe"}
MESSAGES = [{"role": "user", "content": "Describe Paris."}]


@pytest.fixture
def client(sim):
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


def test_a_json_schema_is_answered_with_json_that_fits_it(client):
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, response_format=SCHEMA_FORMAT)
    choice = answer.choices[0]
    assert json.loads(choice.message.content) == EXPECTED
    assert choice.finish_reason == "stop"
    assert answer.usage.completion_tokens >= 1


def test_a_streamed_json_schema_answer_is_the_same_json(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            response_format=SCHEMA_FORMAT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert json.loads(text) == EXPECTED
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens >= 1


def test_json_object_and_plain_text():
    assert structured_text({"response_format": {"type": "json_object"}}) == "{}"
    assert structured_text({"response_format": {"type": "text"}}) is None
    assert structured_text({}) is None
    assert json.loads(structured_text({"response_format": SCHEMA_FORMAT}) or "") == EXPECTED


def test_a_required_tool_call_comes_before_the_format(client):
    clock = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object", "properties": {}}}}
    answer = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, response_format=SCHEMA_FORMAT, tools=[clock], tool_choice="required"
    )
    assert answer.choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.tool_calls[0].function.name == "clock"
