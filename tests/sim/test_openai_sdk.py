"""The official `openai` package works against the simulator unchanged."""

from __future__ import annotations

import openai
import pytest


@pytest.fixture
def client(sim):
    with openai.OpenAI(base_url=sim.url + "/v1", api_key="sk-anything", max_retries=0) as sdk:
        yield sdk


def test_sdk_streams_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="inferia/sim-model",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 6
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "length"


def test_sdk_non_streaming_completion(client):
    completion = client.completions.create(model="inferia/sim-model", prompt="Say hi", max_tokens=4)

    assert completion.object == "text_completion"
    assert completion.choices[0].text
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_sdk_embeddings_decode_to_the_requested_dimensions(client):
    result = client.embeddings.create(model="inferia/sim-model", input=["a", "b"], dimensions=16)

    assert [len(item.embedding) for item in result.data] == [16, 16]
    assert result.usage.prompt_tokens == 2


def test_sdk_lists_models(client):
    assert [model.id for model in client.models.list()] == ["inferia/sim-model"]


def test_sdk_raises_not_found_for_an_unknown_model(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
