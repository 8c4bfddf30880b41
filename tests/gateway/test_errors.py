"""Every error status of `/v1`, in OpenAI's shape, with the request id on the response."""

from __future__ import annotations

import json
import socket

import pytest

from tests.factories import OrganizationFactory
from tests.gateway.conftest import MAX_BODY_BYTES, SIM_MODELS, http, make_deployment, make_key, wait_until_served
from tests.kit.processes import running_sim

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def error_of(body: bytes) -> dict:
    document = json.loads(body)
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return document["error"]


def chat(gateway, secret, body=CHAT, **kwargs):
    return http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret, **kwargs)


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"\xff\xfe\x00garbage", None),
        (b"[1, 2]", None),
        (b'{"model": "gw-chat", "messages": []}', "messages"),
        (b'{"model": "gw-chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gw-chat", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
    ],
)
def test_it_answers_400_to_bad_bodies(tenant, gateway, raw, param):
    status, headers, body = chat(gateway, tenant.secret, raw)
    assert status == 400
    error = error_of(body)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert headers["x-request-id"]


def test_it_answers_400_to_empty_embedding_input(tenant, gateway):
    status, _, body = http(
        "POST", f"{gateway.url}/v1/embeddings", body={"model": "gw-chat", "input": []}, secret=tenant.secret
    )
    assert status == 400
    assert error_of(body)["param"].startswith("input")


def test_it_passes_unknown_vendor_fields_through(tenant, gateway):
    body = {**CHAT, "top_k": 5, "guided_json": {"type": "object"}, "repetition_penalty": 1.1}
    status, _, answer = chat(gateway, tenant.secret, body)
    assert status == 200
    assert json.loads(answer)["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("authorization", [None, "Bearer sk-inf-nope", "Basic abc", "Bearer ", "Bearer sk-other"])
def test_it_answers_401_without_a_usable_key(tenant, gateway, authorization):
    headers = {"authorization": authorization} if authorization else {}
    status, _, body = chat(gateway, None, headers=headers)
    assert status == 401
    assert error_of(body)["code"] == "invalid_api_key"


def test_it_answers_403_to_a_key_without_the_inference_scope(tenant, gateway):
    _key, secret = make_key(tenant.organization, scopes=("read",))
    status, _, body = chat(gateway, secret)
    assert status == 403
    assert error_of(body)["code"] == "insufficient_scope"


def test_it_answers_404_to_unknown_models_and_paths(tenant, gateway):
    status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-missing"})
    assert status == 404
    assert error_of(body)["code"] == "model_not_found"
    status, _, body = http("GET", f"{gateway.url}/v1/nothing-here", secret=tenant.secret)
    assert status == 404


def test_it_hides_other_organisations_deployments(tenant, gateway, sim):

    globex = OrganizationFactory(name="Globex", slug="globex")
    make_deployment(globex, "gw-other", [sim.url])
    status, _, _ = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other"})
    assert status == 404
    status, _, body = http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)
    assert [card["id"] for card in json.loads(body)["data"]] == ["gw-chat"]


def test_it_serves_platform_deployments_shared_with_the_organisation(tenant, gateway, sim):

    deployment, _ = make_deployment(None, "gw-shared", [sim.url])
    deployment.shared_with.add(tenant.organization)
    wait_until_served(gateway, tenant.secret, "gw-shared")
    _status, _, body = http("GET", f"{gateway.url}/v1/models", secret=tenant.secret)
    cards = {card["id"]: card["owned_by"] for card in json.loads(body)["data"]}
    assert cards == {"gw-chat": "acme", "gw-shared": "inferia"}
    assert chat(gateway, tenant.secret, {**CHAT, "model": "gw-shared"})[0] == 200
    # ... and not with anyone else.
    globex = OrganizationFactory(name="Globex", slug="globex")
    _key, other_secret = make_key(globex)
    assert chat(gateway, other_secret, {**CHAT, "model": "gw-shared"})[0] == 404


def test_it_answers_413_to_a_body_over_the_limit(tenant, gateway):
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]}
    status, _headers, body = chat(gateway, tenant.secret, huge)
    assert status == 413
    assert error_of(body)["code"] == "request_too_large"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_it_answers_502_when_no_replica_can_be_reached(tenant, gateway):
    make_deployment(tenant.organization, "gw-other", [_closed_port_url(), _closed_port_url()])
    wait_until_served(gateway, tenant.secret, "gw-other")
    status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other"})
    assert status == 502
    assert error_of(body)["type"] == "upstream_error"


def test_it_answers_502_when_the_engine_fails(tenant, gateway):
    with running_sim("--failure-rate", "1", "--failure-types", "http_500", models=SIM_MODELS) as failing:
        make_deployment(tenant.organization, "gw-other", [failing.url])
        wait_until_served(gateway, tenant.secret, "gw-other")
        status, _, _ = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other"})
    assert status == 502


def test_it_answers_503_without_a_ready_replica_or_from_an_overloaded_engine(tenant, gateway):
    make_deployment(tenant.organization, "gw-other", [])
    wait_until_served(gateway, tenant.secret, "gw-other")
    status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other"})
    assert status == 503
    assert error_of(body)["code"] == "no_replica"
    with running_sim("--failure-rate", "1", "--failure-types", "http_503", models=SIM_MODELS) as overloaded:
        make_deployment(tenant.organization, "gw-shared", [overloaded.url])
        wait_until_served(gateway, tenant.secret, "gw-shared")
        status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-shared"})
    assert status == 503


def test_it_answers_504_when_the_first_byte_is_late(tenant, gateway):
    with running_sim("--ttft-ms", "3000", models=SIM_MODELS) as slow:
        make_deployment(tenant.organization, "gw-other", [slow.url], first_byte_timeout_s=0.3)
        wait_until_served(gateway, tenant.secret, "gw-other")
        status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other", "stream": True})
    assert status == 504
    assert error_of(body)["code"] == "upstream_timeout"


def test_an_error_after_the_stream_started_is_its_last_event(tenant, gateway):
    with running_sim(
        "--failure-rate", "1", "--failure-types", "midstream", "--itl-ms", "5", models=SIM_MODELS
    ) as breaking:
        make_deployment(tenant.organization, "gw-other", [breaking.url])
        wait_until_served(gateway, tenant.secret, "gw-other")
        status, _, body = chat(gateway, tenant.secret, {**CHAT, "model": "gw-other", "stream": True, "max_tokens": 50})
    assert status == 200
    events = [block for block in body.decode().split("\n\n") if block]
    assert len(events) > 1
    assert all(event.startswith("data: ") for event in events)
    last = json.loads(events[-1][len("data: ") :])
    assert last["error"]["type"] == "upstream_error"


def test_it_answers_with_its_own_request_id_and_echoes_the_callers(tenant, gateway):
    _, headers, _ = chat(gateway, tenant.secret, headers={"x-request-id": "client-id.123"})
    assert headers["x-client-request-id"] == "client-id.123"
    assert headers["x-request-id"] != "client-id.123"
    assert len(headers["x-request-id"]) == 32
