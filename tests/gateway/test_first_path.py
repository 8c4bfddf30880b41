"""The first end-to-end path: a key, a deployment, and the engine's answer streamed through the gateway."""

from __future__ import annotations

import json

from tests.gateway.conftest import http


def test_it_streams_a_chat_completion(tenant, gateway):
    status, headers, body = http(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        secret=tenant.secret,
        body={"model": "gw-chat", "messages": [{"role": "user", "content": "hello"}], "stream": True, "max_tokens": 8},
    )
    assert status == 200, body
    assert headers["content-type"].startswith("text/event-stream")
    events = [block[len("data: ") :] for block in body.decode().split("\n\n") if block]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert not any("usage" in chunk and chunk["usage"] for chunk in chunks)  # not asked for: stripped
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert len(text.split()) == 8


def test_it_rejects_a_missing_key(tenant, gateway):
    status, _, body = http("POST", f"{gateway.url}/v1/chat/completions", body={"model": "gw-chat"})
    assert status == 401
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "invalid_api_key"
