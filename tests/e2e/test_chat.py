"""The first end-to-end path: the official openai client, a real key, the gateway, a simulated node."""

from __future__ import annotations

import pytest
from openai import AuthenticationError, OpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]


def test_openai_client_streams_a_chat_completion_through_the_gateway(platform):
    client = OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.key, max_retries=0, timeout=30)

    stream = client.chat.completions.create(
        model=platform.model, messages=[{"role": "user", "content": "Hello!"}], stream=True
    )
    chunks = list(stream)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert len(chunks) > 1
    assert text.strip()


def test_models_lists_the_deployment_the_key_may_use(platform):
    client = OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.key, max_retries=0, timeout=30)

    assert platform.model in [model.id for model in client.models.list()]


def test_an_unknown_key_gets_a_401_in_openais_error_shape(platform):
    client = OpenAI(base_url=f"{platform.base_url}/v1", api_key="sk-inf-not-a-key", max_retries=0, timeout=30)

    with pytest.raises(AuthenticationError) as caught:
        client.chat.completions.create(model=platform.model, messages=[{"role": "user", "content": "Hi"}])

    assert caught.value.status_code == 401
    assert set(caught.value.body) >= {"message", "type", "code"}
