"""The official `openai` client, sync and async, streaming and not, works unchanged against the gateway."""

from __future__ import annotations

import openai
import pytest

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture
def client(tenant, gateway):
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0) as sync_client:
        yield sync_client


@pytest.fixture
async def async_client(tenant, gateway):
    async with openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=tenant.secret, max_retries=0) as client:
        yield client


def test_sync_chat_completion(client):
    completion = client.chat.completions.create(model="gw-chat", messages=MESSAGES, max_tokens=5)
    assert completion.choices[0].message.content
    assert completion.usage.completion_tokens == 5


def test_sync_streamed_chat_completion_with_usage(client):
    stream = client.chat.completions.create(
        model="gw-chat", messages=MESSAGES, max_tokens=6, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(text.split()) == 6
    assert chunks[-1].usage.completion_tokens == 6  # asked for: passed through


def test_sync_completion_streamed_and_not(client):
    completion = client.completions.create(model="gw-chat", prompt="Once upon a time", max_tokens=4)
    assert completion.usage.completion_tokens == 4
    streamed = list(client.completions.create(model="gw-chat", prompt="Once", max_tokens=4, stream=True))
    assert len("".join(chunk.choices[0].text for chunk in streamed if chunk.choices).split()) == 4


def test_sync_embeddings(client):
    result = client.embeddings.create(model="gw-chat", input=["one", "two"])
    assert len(result.data) == 2
    assert len(result.data[0].embedding) > 0


def test_sync_models_list_and_retrieve(client):
    assert [model.id for model in client.models.list()] == ["gw-chat"]
    assert client.models.retrieve("gw-chat").id == "gw-chat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_sync_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert raised.value.body["code"] == "model_not_found"


def test_a_wrong_key_raises_authentication_error(tenant, gateway):
    with (
        openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-inf-not-a-key", max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()


async def test_async_chat_completion_streamed_and_not(async_client):
    completion = await async_client.chat.completions.create(model="gw-chat", messages=MESSAGES, max_tokens=3)
    assert completion.usage.completion_tokens == 3
    stream = await async_client.chat.completions.create(model="gw-chat", messages=MESSAGES, max_tokens=7, stream=True)
    text = ""
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert len(text.split()) == 7


async def test_async_completions_embeddings_and_models(async_client):
    completion = await async_client.completions.create(model="gw-chat", prompt="Hi", max_tokens=2)
    assert completion.choices[0].text
    embedding = await async_client.embeddings.create(model="gw-chat", input="hello")
    assert embedding.usage.prompt_tokens > 0
    models = await async_client.models.list()
    assert [model.id for model in models.data] == ["gw-chat"]
