"""The playground: what it offers, who may send, and the chat relay through the gateway with a hashed,
inference-only key of the user's own whose secret stays in the server-side session."""

from __future__ import annotations

import hashlib
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from apps.compute.models import ComputePool, ModelDeployment
from apps.keys.models import ApiKey
from tests.factories import ComputePoolFactory, ModelDeploymentFactory, ProviderFactory


@pytest.fixture(autouse=True)
def _counters(redis_cache):
    """Key caches live in Redis."""


def _deployment(org, name, state=ModelDeployment.State.READY):
    pool = ComputePool.objects.filter(organization=org, name="pool").first() or ComputePoolFactory(
        organization=org, provider=ProviderFactory(organization=org, name="sim"), name="pool"
    )
    return ModelDeploymentFactory(organization=org, pool=pool, name=name, model_id="sim/tiny", state=state)


class FakeGateway:
    """Stands in for the `/v1` ASGI app: records the request and streams two chunks."""

    def __init__(self):
        self.scope = None
        self.body = b""

    async def __call__(self, scope, receive, send):
        self.scope = scope
        self.body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for word in ("Hello", " there"):
            chunk = {"choices": [{"delta": {"content": word}}]}
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def test_it_offers_the_organisations_serving_models_only(client, owner, org, other_org):
    _deployment(org, "chat-small")
    _deployment(org, "chat-stopped", state=ModelDeployment.State.STOPPED)
    _deployment(other_org, "globex-model")
    client.force_login(owner)
    html = client.get("/console/playground/").content.decode()
    assert 'data-testid="playground-model"' in html
    assert '<option value="chat-small">' in html
    assert "chat-stopped" not in html
    assert "globex-model" not in html
    assert 'data-testid="playground-send"' in html


def test_a_viewer_cannot_send_even_by_forging_the_request(client, viewer, org):
    _deployment(org, "chat-small")
    client.force_login(viewer)
    assert 'data-testid="playground-read-only"' in client.get("/console/playground/").content.decode()
    body = {"org": org.slug, "model": "chat-small", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/console/playground/chat/", json.dumps(body), content_type="application/json")
    assert response.status_code == 403
    assert not ApiKey.objects.filter(owner=viewer).exists()


def test_a_model_of_another_organisation_is_refused(client, owner, org, other_org):
    _deployment(other_org, "globex-model")
    client.force_login(owner)
    body = {"org": org.slug, "model": "globex-model", "messages": [{"role": "user", "content": "hi"}]}
    response = client.post("/console/playground/chat/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400


def test_the_chat_streams_through_the_gateway_with_a_hashed_inference_key(owner, org, monkeypatch):
    _deployment(org, "chat-small")
    gateway = FakeGateway()
    monkeypatch.setattr("apps.console.playground_gateway._gateway_app", lambda: gateway)
    body = {"org": org.slug, "model": "chat-small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}

    async def chat():
        client = AsyncClient()
        await client.aforce_login(owner)
        response = await client.post("/console/playground/chat/", json.dumps(body), content_type="application/json")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        return b"".join([chunk async for chunk in response.streaming_content]).decode()

    stream = async_to_sync(chat)()
    assert "Hello" in stream
    assert " there" in stream
    assert "event: inferia" in stream
    sent = json.loads(gateway.body)
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 16
    secret = dict(gateway.scope["headers"])[b"authorization"].decode().removeprefix("Bearer ")
    key = ApiKey.objects.get(owner=owner)
    assert key.scopes == ["inference"]
    assert key.expires_at is not None
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stream  # the browser never sees it


def test_the_request_summary_is_only_for_who_may_see_it(client, owner, outsider, org):
    import uuid

    from django.utils import timezone

    from apps.usage.models import UsageRecord

    UsageRecord.objects.create(
        request_id="pg-abc", started_at=timezone.now(), organization=org, endpoint="chat.completions", model="m",
        prompt_tokens=5, completion_tokens=7, status_code=200, outcome="ok",
        guardrails=[{"category": "email", "action": "redact", "count": 1}],
    )  # fmt: skip
    client.force_login(owner)
    data = client.get("/console/playground/requests/pg-abc/").json()
    assert data["completion_tokens"] == 7
    assert data["guardrails"][0]["category"] == "email"
    client.force_login(outsider)
    assert client.get("/console/playground/requests/pg-abc/").status_code == 404
    assert client.get(f"/console/playground/requests/{uuid.uuid4().hex}/").status_code == 404


def test_a_template_named_in_the_address_is_preselected_with_its_variables_prefilled(client, owner, org, other_org):
    from apps.policies.prompts.services import prompt_template_create

    _deployment(org, "chat-small")
    prompt_template_create(
        actor=owner,
        organization=org,
        name="support-reply",
        messages=[{"role": "system", "content": "For {{product}}, answer {{customer}}."}],
        variables=[{"name": "product", "default": "Inferia"}, {"name": "customer"}],
    )
    prompt_template_create(
        actor=None,
        organization=other_org,
        name="foreign",
        messages=[{"role": "system", "content": "x"}],
    )
    client.force_login(owner)
    html = client.get("/console/playground/", {"org": org.slug, "template": "support-reply"}).content.decode()
    assert '<option value="support-reply@latest" selected>' in html
    prefilled = html.split('data-testid="playground-template-variables">', 1)[1].split("</textarea>", 1)[0]
    assert json.loads(prefilled.replace("&quot;", '"')) == {"product": "Inferia", "customer": ""}
    other = client.get("/console/playground/", {"org": org.slug, "template": "foreign"}).content.decode()
    assert " selected>" not in other.split('id="pg-template"', 1)[1].split("</select>", 1)[0]
    assert "foreign@latest" not in other  # another organisation's template is neither offered nor chosen
    assert 'data-testid="playground-template-variables"></textarea>' in other
