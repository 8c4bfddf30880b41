"""The OpenAI-compatible surface: response and chunk shapes, usage accounting, errors, tokenize, models."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from inferia_sim.testing import running_sim
from tests.sim.conftest import chat_body, metrics, post, request, sse_events


def test_chat_stream_has_vllm_chunk_shapes_and_a_final_usage_chunk(sim):
    status, headers, body = post(
        sim.url, "/v1/chat/completions", chat_body(stream=True, max_tokens=5, stream_options={"include_usage": True})
    )

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["transfer-encoding"] == "chunked"
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == "inferia/sim-model" for chunk in chunks)
    assert chunks[0]["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    content_chunks = chunks[1:-1]
    assert len(content_chunks) == 5
    assert all(chunk["choices"][0]["delta"]["content"] for chunk in content_chunks)
    assert [chunk["choices"][0]["finish_reason"] for chunk in content_chunks] == [None] * 4 + ["length"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["total_tokens"] == usage_chunk["usage"]["prompt_tokens"] + 5


def test_chat_stream_without_include_usage_has_no_usage_chunk(sim):
    _status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(stream=True, max_tokens=3))

    chunks = sse_events(body)[:-1]
    assert all(chunk["choices"] for chunk in chunks)
    assert not any("usage" in chunk for chunk in chunks)


def test_streaming_and_non_streaming_agree_on_usage_and_text(sim):
    _status, _headers, streamed = post(
        sim.url, "/v1/chat/completions", chat_body(stream=True, max_tokens=7, stream_options={"include_usage": True})
    )
    status, headers, whole = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=7))

    assert status == 200
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(whole)
    chunks = sse_events(streamed)[:-1]
    response = json.loads(whole)
    assert response["object"] == "chat.completion"
    assert response["id"].startswith("chatcmpl-")
    assert response["usage"]["prompt_tokens"] == chunks[-1]["usage"]["prompt_tokens"]
    assert response["usage"]["completion_tokens"] == chunks[-1]["usage"]["completion_tokens"] == 7
    assert response["usage"]["total_tokens"] == response["usage"]["prompt_tokens"] + 7
    streamed_text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks if chunk["choices"])
    choice = response["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == streamed_text
    assert choice["finish_reason"] == "length"


def test_without_max_tokens_it_stops_after_the_default_length():
    with running_sim(default_max_tokens=12) as sim:
        _status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body())

    response = json.loads(body)
    assert response["usage"]["completion_tokens"] == 12
    assert response["choices"][0]["finish_reason"] == "stop"


def test_max_completion_tokens_is_honoured(sim):
    _status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(max_completion_tokens=3))

    assert json.loads(body)["usage"]["completion_tokens"] == 3


def test_completions_stream_and_whole(sim):
    _status, _headers, streamed = post(
        sim.url,
        "/v1/completions",
        {"model": "inferia/sim-model", "prompt": "Once upon a time", "max_tokens": 4, "stream": True,
         "stream_options": {"include_usage": True}},
    )  # fmt: skip
    status, _headers, whole = post(
        sim.url, "/v1/completions", {"model": "inferia/sim-model", "prompt": "Once upon a time", "max_tokens": 4}
    )

    chunks = sse_events(streamed)[:-1]
    assert all(chunk["object"] == "text_completion" and chunk["id"].startswith("cmpl-") for chunk in chunks)
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None, None, None, "length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    response = json.loads(whole)
    assert status == 200
    assert response["object"] == "text_completion"
    assert response["choices"][0]["text"] == "".join(chunk["choices"][0]["text"] for chunk in chunks[:-1])
    assert response["usage"] == {**chunks[-1]["usage"], "prompt_tokens_details": None}
    assert response["usage"]["prompt_tokens"] == 4  # 16 characters, four per token


def test_unknown_extra_fields_are_ignored(sim):
    status, _headers, _body = post(
        sim.url, "/v1/chat/completions", chat_body(max_tokens=2, top_k=5, guided_json={"type": "object"}, seed=3)
    )

    assert status == 200


def test_embeddings_are_deterministic_unit_vectors(sim):
    status, _headers, body = post(sim.url, "/v1/embeddings", {"model": "inferia/sim-model", "input": ["hello", "bye"]})
    _status, _headers, again = post(sim.url, "/v1/embeddings", {"model": "inferia/sim-model", "input": "hello"})
    _status, _headers, small = post(sim.url, "/v1/embeddings", {"input": "hello", "dimensions": 8})

    assert status == 200
    response = json.loads(body)
    assert response["object"] == "list"
    assert [item["index"] for item in response["data"]] == [0, 1]
    first = response["data"][0]["embedding"]
    assert len(first) == 384
    assert abs(sum(value * value for value in first) - 1.0) < 1e-6
    assert json.loads(again)["data"][0]["embedding"] == first
    assert response["data"][1]["embedding"] != first
    assert response["usage"]["prompt_tokens"] == 3  # "hello" is 2 tokens, "bye" 1 (four characters a token)
    assert len(json.loads(small)["data"][0]["embedding"]) == 8


def test_models_lists_every_served_name_like_vllm():
    with running_sim(models=("base-model", "alias"), max_model_len=2048) as sim:
        status, _headers, body = request(sim.url, "GET", "/v1/models")

    response = json.loads(body)
    assert status == 200
    assert response["object"] == "list"
    assert [card["id"] for card in response["data"]] == ["base-model", "alias"]
    for card in response["data"]:
        assert card["object"] == "model"
        assert card["owned_by"] == "vllm"
        assert card["root"] == "base-model"
        assert card["parent"] is None
        assert card["max_model_len"] == 2048


def test_an_alias_is_served_and_reported_as_the_base_model_like_vllm():
    with running_sim(models=("base-model", "alias")) as sim:
        _status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(model="alias", max_tokens=1))

    assert json.loads(body)["model"] == "base-model"


def test_tokenize_count_matches_usage_prompt_tokens(sim):
    body = chat_body(max_tokens=1)
    _status, _headers, tokenized = post(sim.url, "/tokenize", {"model": body["model"], "messages": body["messages"]})
    _status, _headers, completed = post(sim.url, "/v1/chat/completions", body)
    _status, _headers, prompt_tokens = post(sim.url, "/tokenize", {"prompt": "abcdefghi"})

    tokens = json.loads(tokenized)
    assert tokens["count"] == len(tokens["tokens"]) == json.loads(completed)["usage"]["prompt_tokens"]
    assert tokens["max_model_len"] == 4096
    assert json.loads(prompt_tokens)["count"] == 3


def test_tokenize_returns_token_strings_when_asked_like_vllm(sim):
    text = "Chunks are counted by the engine, héllo wörld."
    _status, _headers, plain = post(sim.url, "/tokenize", {"prompt": text})
    _status, _headers, with_strs = post(sim.url, "/tokenize", {"prompt": text, "return_token_strs": True})
    _status, _headers, embedded = post(sim.url, "/v1/embeddings", {"model": "inferia/sim-model", "input": text})

    assert json.loads(plain)["token_strs"] is None  # vLLM's default: ids only
    tokens = json.loads(with_strs)
    assert tokens["count"] == len(tokens["tokens"]) == len(tokens["token_strs"])
    assert tokens["count"] == json.loads(embedded)["usage"]["prompt_tokens"]
    assert "".join(tokens["token_strs"]) == text  # the simulated tokenizer's pieces are plain text windows


def test_tokenize_gives_chat_template_tokens_their_own_strings(sim):
    body = chat_body(max_tokens=1)
    _status, _headers, tokenized = post(
        sim.url, "/tokenize", {"model": body["model"], "messages": body["messages"], "return_token_strs": True}
    )

    tokens = json.loads(tokenized)
    assert len(tokens["token_strs"]) == tokens["count"]
    assert tokens["token_strs"][0] == "<|start|>"


def test_tokenize_refuses_flags_that_are_not_booleans(sim):
    strs = post(sim.url, "/tokenize", {"prompt": "abc", "return_token_strs": "yes"})
    special = post(sim.url, "/tokenize", {"prompt": "abc", "add_special_tokens": 1})

    assert strs[0] == special[0] == 400
    assert json.loads(strs[2])["error"]["param"] == "return_token_strs"


def test_unknown_model_is_a_404_in_openai_error_shape(sim):
    status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(model="nope"))

    assert status == 404
    assert json.loads(body) == {
        "error": {"message": "The model `nope` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}
    }


def test_bad_json_and_missing_messages_are_400s(sim):
    bad_json = request(sim.url, "POST", "/v1/chat/completions", raw=b'{"model": ')
    no_messages = post(sim.url, "/v1/chat/completions", {"model": "inferia/sim-model"})
    bad_max_tokens = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=0))

    for status, _headers, body in (bad_json, no_messages, bad_max_tokens):
        assert status == 400
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == 400


def test_requests_beyond_the_context_window_are_rejected_like_vllm():
    with running_sim(max_model_len=32) as sim:
        status, _headers, body = post(sim.url, "/v1/chat/completions", chat_body(max_tokens=100))

    assert status == 400
    assert "maximum context length is 32 tokens" in json.loads(body)["error"]["message"]


def test_keep_alive_connections_answer_pipelined_requests_in_order(sim):
    parts = urlsplit(sim.url)
    one = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
    two = b"GET /v1/models HTTP/1.1\r\nhost: x\r\n\r\n"
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(one + two)
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b"}"):
            received += sock.recv(65536)

    first, second = received.split(b"HTTP/1.1 200 OK")[1:]
    assert b"content-length: 0" in first
    assert b'"object": "list"' in second


def test_metrics_expose_vllm_names_with_the_model_label(sim):
    post(sim.url, "/v1/chat/completions", chat_body(max_tokens=3))

    samples = metrics(sim.url)
    label = '{model_name="inferia/sim-model"}'
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                 "vllm:time_to_first_token_seconds_count"):  # fmt: skip
        assert name + label in samples
    assert samples["vllm:generation_tokens_total" + label] == 3
    assert samples['vllm:request_success_total{finished_reason="length",model_name="inferia/sim-model"}'] == 1
    assert samples['vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="inferia/sim-model"}'] == 1
