"""`/v1/chat/socket` with a real WebSocket client against a real web process and inferia-sim: a key on the upgrade
or a minted socket token, requests interleaved on one connection, cancelling one by id, the pipeline's errors and
limits per request, and usage records for each."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from apps.audit.models import AuditEvent
from apps.usage.models import UsageRecord
from apps.usage.stream import usage_stream_drain
from tests.factories import OrganizationFactory
from tests.gateway.conftest import SIM_MODELS, SOCKET_ORIGIN, http, make_deployment, make_key, wait_until_served
from tests.gateway.test_policy_limits import tenant_with_policy
from tests.gateway.test_streaming_and_failover import sim_running_requests
from tests.kit.processes import TestProcess, sim_start
from tests.kit.waiting import eventually

MESSAGES = [{"role": "user", "content": "Say something."}]
FINAL = ("done", "error", "cancelled")


@pytest.fixture(scope="module")
def paced_sim() -> Iterator[TestProcess]:
    """An engine that takes 30 ms per token, so that streams overlap and a cancel lands mid-answer."""
    process = sim_start("--itl-ms", "30", models=SIM_MODELS)
    yield process
    process.stop()


def socket_url(gateway: TestProcess) -> str:
    return gateway.url.replace("http://", "ws://", 1) + "/v1/chat/socket"


def open_socket(
    gateway: TestProcess, *, secret: str | None = None, token: str | None = None, origin: str | None = None
) -> ClientConnection:
    """A connection, authenticated by a key on the upgrade or a token as the first message; not yet `ready`."""
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else None
    socket = connect(
        socket_url(gateway), additional_headers=headers, origin=origin, proxy=None, open_timeout=10, legacy=True
    )
    if token is not None:
        socket.send(json.dumps({"type": "auth", "token": token}))
    return socket


def ready(socket: ClientConnection) -> ClientConnection:
    assert json.loads(socket.recv(timeout=10)) == {"type": "ready"}
    return socket


def ask(socket: ClientConnection, request_id: str, model: str = "gw-chat", **body: object) -> None:
    document = {"model": model, "messages": MESSAGES, "max_tokens": 5, **body}
    socket.send(json.dumps({"type": "request", "id": request_id, "body": document}))


def until_final(socket: ClientConnection, *ids: str) -> list[dict]:
    """Every frame received until each of `ids` has its final frame (done, error or cancelled)."""
    frames: list[dict] = []
    pending = set(ids)
    while pending:
        frame = json.loads(socket.recv(timeout=15))
        frames.append(frame)
        if frame.get("type") in FINAL:
            pending.discard(frame["id"])
    return frames


def mint(gateway: TestProcess, secret: str, **body: object) -> tuple[int, dict]:
    status, _, raw = http("POST", f"{gateway.url}/api/socket-tokens/", body=body, secret=secret)
    return status, json.loads(raw)


def closed_with(socket: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed) as closed:
        socket.recv(timeout=10)
    return closed.value.rcvd.code if closed.value.rcvd is not None else None


def test_a_key_on_the_upgrade_streams_chunks_then_done_with_usage(tenant, gateway):
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "first")
        frames = until_final(socket, "first")
    chunks = [frame["chunk"] for frame in frames if frame["type"] == "chunk"]
    assert {frame["id"] for frame in frames} == {"first"}
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert len(text.split()) == 5
    done = frames[-1]
    assert done["type"] == "done"
    assert done["usage"]["completion_tokens"] == 5
    assert done["usage"]["prompt_tokens"] > 0


def test_two_requests_interleave_and_each_gets_a_usage_record(tenant, gateway, paced_sim, redis_cache):
    make_deployment(tenant.organization, "gw-other", [paced_sim.url])
    wait_until_served(gateway, tenant.secret, "gw-other")
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "a", model="gw-other", max_tokens=8)
        ask(socket, "b", model="gw-other", max_tokens=8)
        frames = until_final(socket, "a", "b")

    order = [frame["id"] for frame in frames if frame["type"] == "chunk"]
    last_a = max(index for index, request_id in enumerate(order) if request_id == "a")
    first_b = order.index("b")
    assert first_b < last_a  # b's answer began while a's was still streaming
    finals = {frame["id"]: frame for frame in frames if frame["type"] == "done"}
    assert finals["a"]["usage"]["completion_tokens"] == finals["b"]["usage"]["completion_tokens"] == 8

    assert usage_stream_drain() == 2
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk).order_by("client_request_id")
    assert [(r.client_request_id, r.endpoint, r.streamed, r.status_code, r.completion_tokens) for r in records] == [
        ("a", "chat.socket", True, 200, 8),
        ("b", "chat.socket", True, 200, 8),
    ]
    assert records[0].request_id != records[1].request_id  # our ids, not the client's


def test_cancel_stops_one_request_upstream_while_the_other_completes(tenant, gateway, paced_sim, redis_cache):
    make_deployment(tenant.organization, "gw-other", [paced_sim.url])
    wait_until_served(gateway, tenant.secret, "gw-other")
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "long", model="gw-other", max_tokens=400)  # 12 s if nobody stopped it
        ask(socket, "short", model="gw-other", max_tokens=20)
        long_chunks = 0
        frames: list[dict] = []
        while long_chunks < 4:
            frame = json.loads(socket.recv(timeout=15))
            frames.append(frame)
            long_chunks += frame["id"] == "long" and frame["type"] == "chunk"
        socket.send(json.dumps({"type": "cancel", "id": "long"}))
        frames += until_final(socket, "long", "short")

    finals = {frame["id"]: frame["type"] for frame in frames if frame["type"] in FINAL}
    assert finals == {"long": "cancelled", "short": "done"}
    eventually(lambda: sim_running_requests(paced_sim.url) == 0, timeout=2, what="the engine's request dropped")
    assert usage_stream_drain() == 2
    records = {r.client_request_id: r for r in UsageRecord.objects.filter(organization_id=tenant.organization.pk)}
    assert (records["long"].outcome, records["long"].status_code) == ("cancelled", 499)
    assert 1 <= records["long"].completion_tokens < 400
    assert (records["short"].outcome, records["short"].status_code, records["short"].completion_tokens) == (
        "ok",
        200,
        20,
    )


def test_errors_come_per_request_in_openais_shape_and_the_socket_stays_open(tenant, gateway, redis_cache):
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "unknown", model="no-such-model")
        (missing,) = until_final(socket, "unknown")
        socket.send(json.dumps({"type": "request", "id": "bad", "body": {"model": "gw-chat"}}))
        (invalid,) = until_final(socket, "bad")
        socket.send(json.dumps({"type": "request", "body": {"model": "gw-chat", "messages": MESSAGES}}))
        anonymous = json.loads(socket.recv(timeout=10))
        socket.send("not json")
        garbled = json.loads(socket.recv(timeout=10))
        ask(socket, "fine")
        after = until_final(socket, "fine")

    assert missing["type"] == "error"
    assert missing["status"] == 404
    assert missing["error"]["code"] == "model_not_found"
    assert set(missing["error"]) == {"message", "type", "param", "code"}
    assert (invalid["type"], invalid["status"], invalid["error"]["type"]) == ("error", 400, "invalid_request_error")
    assert invalid["error"]["param"] == "messages"
    assert (anonymous["id"], anonymous["status"], anonymous["error"]["param"]) == (None, 400, "id")
    assert (garbled["id"], garbled["status"]) == (None, 400)
    assert after[-1]["type"] == "done"
    usage_stream_drain()
    records = UsageRecord.objects.filter(organization_id=tenant.organization.pk)
    assert sorted((r.client_request_id, r.status_code) for r in records) == [
        ("bad", 400),
        ("fine", 200),
        ("unknown", 404),
    ]


def test_a_bad_key_is_a_401_that_closes_the_connection(tenant, gateway):
    socket = open_socket(gateway, secret="sk-inf-not-a-real-key")
    error = json.loads(socket.recv(timeout=10))
    assert (error["id"], error["status"], error["error"]["code"]) == (None, 401, "invalid_api_key")
    assert closed_with(socket) == 4401


def test_a_key_revoked_mid_connection_ends_it_at_its_next_request(tenant, gateway):
    from apps.keys.services import api_key_revoke

    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "before")
        assert until_final(socket, "before")[-1]["type"] == "done"
        api_key_revoke(key=tenant.key)
        time.sleep(0.3)  # the revocation reaches the web process through Redis pub/sub
        ask(socket, "after")
        (error,) = until_final(socket, "after")
        assert (error["status"], error["error"]["code"]) == (401, "invalid_api_key")
        assert closed_with(socket) == 4401


def test_the_requests_in_flight_on_one_connection_are_bounded(tenant, gateway, paced_sim):
    make_deployment(tenant.organization, "gw-other", [paced_sim.url])
    wait_until_served(gateway, tenant.secret, "gw-other")
    limit = 32  # INFERIA_SOCKET_MAX_IN_FLIGHT's default
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        for index in range(limit + 1):
            ask(socket, f"r{index}", model="gw-other", max_tokens=30)
        ask(socket, "r0", model="gw-other")  # a duplicate of an id in flight
        frames: list[dict] = []
        while sum(frame["type"] in FINAL for frame in frames) < limit + 2:
            frames.append(json.loads(socket.recv(timeout=15)))
    errors = [frame for frame in frames if frame["type"] == "error"]
    assert sorted((frame["id"], frame["status"], frame["error"]["code"]) for frame in errors) == [
        ("r0", 400, "duplicate_request_id"),
        (f"r{limit}", 429, "too_many_requests_in_flight"),
    ]
    assert sorted(frame["id"] for frame in frames if frame["type"] == "done") == sorted(f"r{i}" for i in range(limit))


def test_a_rate_limit_refuses_one_request_with_429(transactional_db, sim, gateway, redis_cache):
    tenant = tenant_with_policy(gateway, sim.url, requests_per_minute=1)
    with ready(open_socket(gateway, secret=tenant.secret)) as socket:
        ask(socket, "one")
        first = until_final(socket, "one")
        ask(socket, "two")
        (refused,) = until_final(socket, "two")
        ask(socket, "three")
        (again,) = until_final(socket, "three")
    assert first[-1]["type"] == "done"
    assert (refused["type"], refused["status"], refused["error"]["code"]) == ("error", 429, "rate_limit_exceeded")
    assert refused["error"]["type"] == "rate_limit_error"
    assert 1 <= refused["retry_after"] <= 60
    assert again["status"] == 429  # the socket stays open; each request is counted


# --- Socket tokens ----------------------------------------------------------------------------------------------------


def test_a_minted_token_opens_one_connection_from_an_allowed_origin(tenant, gateway):
    status, minted = mint(gateway, tenant.secret)
    assert status == 201
    assert minted["token"].startswith("wst-")
    assert (minted["key"], minted["organization"], minted["expires_in"]) == (
        tenant.key.pk,
        tenant.organization.pk,
        60,
    )
    with ready(open_socket(gateway, token=minted["token"], origin=SOCKET_ORIGIN)) as socket:
        ask(socket, "browser")
        frames = until_final(socket, "browser")
    assert frames[-1]["type"] == "done"

    # Single use: the same token again is a 401.
    socket = open_socket(gateway, token=minted["token"], origin=SOCKET_ORIGIN)
    error = json.loads(socket.recv(timeout=10))
    assert (error["status"], error["error"]["code"]) == (401, "invalid_api_key")
    assert closed_with(socket) == 4401

    event = AuditEvent.objects.get(action="key.socket_token_mint")
    assert event.target_id == str(tenant.key.pk)
    assert minted["token"] not in json.dumps(event.changes)


def test_an_expired_token_is_refused(tenant, gateway):
    status, minted = mint(gateway, tenant.secret, ttl_seconds=1)
    assert (status, minted["expires_in"]) == (201, 1)
    time.sleep(1.5)
    socket = open_socket(gateway, token=minted["token"], origin=SOCKET_ORIGIN)
    assert json.loads(socket.recv(timeout=10))["status"] == 401
    assert closed_with(socket) == 4401


def test_a_browser_from_another_origin_is_refused_at_the_upgrade(tenant, gateway):
    _, minted = mint(gateway, tenant.secret)
    with pytest.raises(InvalidStatus) as refused:
        open_socket(gateway, token=minted["token"], origin="https://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        open_socket(gateway, secret=tenant.secret, origin="https://evil.example")  # checked whenever present
    # The refused upgrade did not spend the token.
    with open_socket(gateway, token=minted["token"], origin=SOCKET_ORIGIN) as socket:
        ready(socket)


def test_a_missing_or_malformed_token_is_a_401(tenant, gateway):
    socket = open_socket(gateway, origin=SOCKET_ORIGIN)
    socket.send(json.dumps({"type": "request", "id": "x", "body": {}}))
    assert json.loads(socket.recv(timeout=10))["status"] == 401
    assert closed_with(socket) == 4401


def test_a_token_of_another_organisation_cannot_use_this_organisations_models(tenant, gateway):
    other = OrganizationFactory(name="Globex", slug="globex")
    _, other_secret = make_key(other)
    _, minted = mint(gateway, other_secret)
    assert minted["organization"] == other.pk
    with ready(open_socket(gateway, token=minted["token"], origin=SOCKET_ORIGIN)) as socket:
        ask(socket, "steal")  # gw-chat is Acme's deployment
        (error,) = until_final(socket, "steal")
    assert (error["status"], error["error"]["code"]) == (404, "model_not_found")


def test_minting_errors_are_shaped_by_drf(tenant, gateway):
    status, body = mint(gateway, tenant.secret, ttl_seconds=100_000)
    assert status == 400
    assert "ttl_seconds" in json.dumps(body) or "between" in json.dumps(body)
    status, body = mint(gateway, tenant.secret, key=tenant.key.pk + 1000)
    assert status == 403
    assert "detail" in body
    _, read_only = make_key(tenant.organization, scopes=("read",))
    status, body = mint(gateway, read_only)
    assert status == 403
    assert "inference" in body["detail"]
    status, body = mint(gateway, "sk-inf-not-a-real-key")
    assert status == 401
