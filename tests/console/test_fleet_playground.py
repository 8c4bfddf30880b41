"""The playground as a fleet's owners meet it: it opens on an organisation that has something to chat with, says
plainly when nothing is deployed, labels the key it runs on, preselects a model it is sent to, shows cost and
finish reason, and stops the upstream request when the user presses Stop."""

from __future__ import annotations

import contextlib

import pytest

from apps.compute.models import ComputePool, ModelDeployment
from tests.factories import ComputePoolFactory, MembershipFactory, ModelDeploymentFactory, ProviderFactory


@pytest.fixture(autouse=True)
def _counters(redis_cache):
    """Key caches live in Redis."""


def _deployment(org, name, state=ModelDeployment.State.READY):
    pool = ComputePool.objects.filter(organization=org, name="pool").first() or ComputePoolFactory(
        organization=org, provider=ProviderFactory(organization=org, name="sim"), name="pool"
    )
    return ModelDeploymentFactory(organization=org, pool=pool, name=name, model_id="sim/tiny", state=state)


@pytest.fixture
def owner_of_both(owner, other_org, roles):
    """Owner of Acme (first by name, nothing deployed) and of Globex (a ready model)."""
    MembershipFactory(user=owner, organization=other_org, role=roles["owner"])
    return owner


def test_it_opens_on_an_organisation_with_a_ready_model(client, owner_of_both, org, other_org):
    _deployment(other_org, "globex-chat")
    client.force_login(owner_of_both)
    response = client.get("/console/playground/")
    assert response["Location"] == f"/console/playground/?org={other_org.slug}"  # the top bar follows
    html = client.get(response["Location"]).content.decode()
    assert f'data-org="{other_org.slug}"' in html
    assert '<option value="globex-chat"' in html
    assert "not a member" not in html


def test_an_organisation_asked_for_by_name_is_kept_even_when_empty(client, owner_of_both, org, other_org):
    _deployment(other_org, "globex-chat")
    client.force_login(owner_of_both)
    html = client.get(f"/console/playground/?org={org.slug}").content.decode()
    assert "Nothing is deployed in Acme" in html
    assert f'href="/console/deployments/?org={org.slug}"' in html
    # Chosen once, kept: opening the playground again stays there rather than moving away.
    html = client.get("/console/playground/").content.decode()
    assert "Nothing is deployed in Acme" in html


def test_with_nothing_deployed_anywhere_it_says_so_plainly(client, owner, org):
    client.force_login(owner)
    html = client.get("/console/playground/").content.decode()
    assert "Nothing is deployed in Acme" in html
    assert "not a member" not in html


def test_a_superadmin_who_owns_an_organisation_is_never_told_they_are_not_a_member(client, owner, org):
    owner.is_superuser = True
    owner.is_staff = True
    owner.save()
    _deployment(org, "chat-small")
    client.force_login(owner)
    html = client.get("/console/playground/").content.decode()
    assert "not a member" not in html
    assert f'data-org="{org.slug}"' in html


def test_a_member_whose_role_has_no_playground_is_not_told_they_are_not_a_member(client, org, roles):
    from apps.rbac.models import Role

    bare = Role.objects.create(organization=org, name="Nothing", slug="nothing")
    person = MembershipFactory(user__email="bare@acme.test", organization=org, role=bare).user
    client.force_login(person)
    html = client.get("/console/playground/").content.decode()
    assert "not a member" not in html
    assert "Acme" in html


def test_someone_without_any_organisation_is_told_so(client, db):
    from tests.factories import UserFactory

    client.force_login(UserFactory(email="alone@nowhere.test"))
    assert "You are not a member of an organisation yet" in client.get("/console/playground/").content.decode()


# The playground's key ------------------------------------------------------------------------------------------------


class FakeGateway:
    """Stands in for the `/v1` ASGI app: takes the request and answers one chunk."""

    def __init__(self):
        self.scope = None

    async def __call__(self, scope, receive, send):
        self.scope = scope
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _chat(user, org, model, gateway, monkeypatch):
    import json

    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    monkeypatch.setattr("apps.console.playground_gateway._gateway_app", lambda: gateway)
    body = {"org": org.slug, "model": model, "messages": [{"role": "user", "content": "hi"}]}

    async def chat():
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.post("/console/playground/chat/", json.dumps(body), content_type="application/json")
        return response.status_code, b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(chat)()


def test_the_playground_key_is_labelled_and_marked_in_the_key_list(client, owner, org, monkeypatch):
    from apps.audit.models import AuditEvent
    from apps.keys.models import ApiKey

    _deployment(org, "chat-small")
    status, _ = _chat(owner, org, "chat-small", FakeGateway(), monkeypatch)
    assert status == 200
    key = ApiKey.objects.get(owner=owner)
    assert key.purpose == ApiKey.Purpose.PLAYGROUND
    assert key.name == "Console playground"
    created = AuditEvent.objects.get(action="key.create", target_id=str(key.pk))
    assert created.changes["purpose"] == "playground"
    client.force_login(owner)
    html = client.get("/console/keys/").content.decode()
    row = html[html.index(f'data-key-prefix="{key.prefix}"') :]
    row = row[: row.index("</tr>")]
    assert 'data-testid="key-playground"' in row
    assert "used by the console playground" in row
    detail = client.get(f"/console/keys/{key.pk}/").content.decode()
    assert "used by the console playground" in detail


def test_a_key_merely_named_like_the_playground_key_is_not_marked(client, owner, org):
    from apps.keys.services import api_key_create

    issued = api_key_create(organization=org, name="Console playground", scopes=["inference"], owner=owner, actor=owner)
    client.force_login(owner)
    html = client.get("/console/keys/").content.decode()
    row = html[html.index(f'data-key-prefix="{issued.key.prefix}"') :]
    assert 'data-testid="key-playground"' not in row[: row.index("</tr>")]


def test_a_model_named_in_the_link_is_preselected_and_a_foreign_one_is_ignored(client, owner, org, other_org):
    _deployment(org, "chat-a")
    _deployment(org, "chat-b")
    _deployment(other_org, "globex-chat")
    client.force_login(owner)
    html = client.get(f"/console/playground/?org={org.slug}&model=chat-b").content.decode()
    assert '<option value="chat-b" selected>' in html
    html = client.get(f"/console/playground/?org={org.slug}&model=globex-chat").content.decode()
    assert '<option value="globex-chat"' not in html
    assert " selected>chat-" not in html


# Stop, cost and finish reason --------------------------------------------------------------------------------------


class EndlessGateway:
    """Stands in for the `/v1` ASGI app with an upstream that never ends by itself: streams a chunk every 20 ms
    until its client disconnects, as the real gateway's consumer watches for (it then cancels the upstream call)."""

    def __init__(self):
        self.chunks_sent = 0
        self.saw_disconnect = False
        self.stopped = None

    async def __call__(self, scope, receive, send):
        import asyncio

        self.stopped = self.stopped or asyncio.Event()
        await receive()  # the body
        gone = asyncio.ensure_future(receive())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"rq-1")]})
            while not gone.done():
                chunk = b'data: {"choices": [{"delta": {"content": "word "}}]}\n\n'
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.chunks_sent += 1
                await asyncio.sleep(0.02)
            self.saw_disconnect = gone.result()["type"] == "http.disconnect"
        finally:
            gone.cancel()
            self.stopped.set()


def test_stop_ends_the_upstream_request(owner, org, monkeypatch):
    """The page's Stop aborts its fetch: the browser's connection closes and Django's ASGI handler cancels the task
    relaying the stream (what it does on `http.disconnect`). The server must then end the gateway request, so that
    the engine stops generating and metering counts what was delivered, instead of streaming on unread."""
    import asyncio
    import json

    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    _deployment(org, "chat-small")
    gateway = EndlessGateway()
    monkeypatch.setattr("apps.console.playground_gateway._gateway_app", lambda: gateway)
    body = {"org": org.slug, "model": "chat-small", "messages": [{"role": "user", "content": "go"}]}

    async def scenario():
        client = AsyncClient()
        await client.aforce_login(owner)
        response = await client.post("/console/playground/chat/", json.dumps(body), content_type="application/json")
        assert response.status_code == 200
        first = asyncio.Event()

        async def relay():  # the handler's loop over the response
            async for chunk in response.streaming_content:
                if b"word" in chunk:
                    first.set()

        relaying = asyncio.ensure_future(relay())
        await asyncio.wait_for(first.wait(), timeout=5)
        relaying.cancel()  # the client disconnected
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        await asyncio.wait_for(gateway.stopped.wait(), timeout=5)
        sent = gateway.chunks_sent
        await asyncio.sleep(0.2)
        assert gateway.chunks_sent == sent  # nothing streams on after the stop

    async_to_sync(scenario)()
    assert gateway.saw_disconnect


def test_the_request_summary_gives_the_cost_in_currency(client, owner, org):
    from django.utils import timezone

    from apps.usage.models import UsageRecord

    UsageRecord.objects.create(
        request_id="pg-cost", started_at=timezone.now(), organization=org, endpoint="chat.completions", model="m",
        prompt_tokens=5, completion_tokens=7, cost_micros=1234, status_code=200, outcome="ok",
    )  # fmt: skip
    client.force_login(owner)
    data = client.get("/console/playground/requests/pg-cost/").json()
    assert data["cost"] == "$0.001234"
    assert data["cost_micros"] == 1234


def test_it_shows_the_websocket_example_for_this_host_and_model(client, owner, org):
    _deployment(org, "chat-small")
    client.force_login(owner)
    html = client.get(f"/console/playground/?org={org.slug}&model=chat-small").content.decode()
    assert 'data-testid="playground-socket-example"' in html
    assert 'new WebSocket("ws://testserver/v1/chat/socket")' in html
    assert 'model: "chat-small"' in html
    assert "POST /api/socket-tokens/" in html
