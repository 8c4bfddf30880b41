"""Hostile or careless bodies on `/v1`: strings that would end up in records carry no control characters, integers
are integers, and a bad nested item is named by its path."""

from __future__ import annotations

import json

import pytest
from django.conf import settings

from apps.usage.events import EVENT_FIELD
from tests.gateway.conftest import http

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def chat(gateway, secret, body):
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret)
    return status, json.loads(raw)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "model": "gw\u0000chat"}, "model"),
        ({**CHAT, "model": "gw-chat\n"}, "model"),
        ({**CHAT, "user": "alice\u0000"}, "user"),
        ({**CHAT, "user": "a\rb"}, "user"),
        ({**CHAT, "metadata": {"team": "x\u0000y"}}, "metadata.team"),
        ({**CHAT, "metadata": {"a\u0007": "b"}}, "metadata.a\u0007.[key]"),
    ],
)
def test_it_refuses_control_characters_in_recorded_strings_before_recording_them(
    tenant, gateway, redis_cache, body, param
):
    status, answer = chat(gateway, tenant.secret, body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param
    assert "control characters" in answer["error"]["message"]
    (entry,) = redis_cache.xrange(settings.INFERIA_USAGE_STREAM)
    event = json.loads(entry[1][EVENT_FIELD.encode()])
    assert (event["st"], event["m"]) == (400, "")  # metered, with nothing of the refused strings


def test_it_refuses_more_than_sixteen_metadata_pairs(tenant, gateway):
    status, answer = chat(gateway, tenant.secret, {**CHAT, "metadata": {str(n): "v" for n in range(17)}})
    assert status == 400
    assert answer["error"]["param"] == "metadata"


@pytest.mark.parametrize("value", ["4", True, 4.0, [4]])
def test_it_refuses_max_tokens_that_is_not_an_integer(tenant, gateway, value):
    status, answer = chat(gateway, tenant.secret, {**CHAT, "max_tokens": value})
    assert status == 400
    assert answer["error"]["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "messages": ["hello"]}, "messages.0"),
        ({**CHAT, "messages": [{"role": "user", "content": "x"}, 7]}, "messages.1"),
        ({**CHAT, "stream": True, "stream_options": "yes"}, "stream_options"),
    ],
)
def test_a_bad_nested_object_is_named_by_its_path(tenant, gateway, body, param):
    status, answer = chat(gateway, tenant.secret, body)
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["message"] == f"{param}: must be a JSON object."
