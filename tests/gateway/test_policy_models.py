"""Model allow-lists through the real web process: a key's and its organisation's lists both apply, `/v1/models`
shows only what the key may use, and a policy change reaches a running gateway within a second."""

from __future__ import annotations

import json

from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, wait_until_served
from tests.kit.waiting import eventually

CHAT = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def chat_status(gateway, secret: str, model: str = "gw-chat", **fields) -> tuple[int, dict]:
    body = {**CHAT, "model": model, **fields}
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret)
    return status, json.loads(raw)


def test_a_key_may_use_only_its_allowed_models(transactional_db, sim, gateway, redis_cache):
    from apps.keys.services import api_key_create

    organization = OrganizationFactory(name="Acme", slug="acme")
    make_deployment(organization, "gw-chat", [sim.url])
    make_deployment(organization, "gw-shared", [sim.url])
    secret = api_key_create(
        organization=organization, name="narrow", scopes=["inference"], allowed_models=["gw-sh*"]
    ).secret
    wait_until_served(gateway, secret, "gw-shared")

    status, body = chat_status(gateway, secret, "gw-chat")
    assert status == 403
    assert body["error"]["code"] == "model_not_allowed"
    assert body["error"]["param"] == "model"
    assert chat_status(gateway, secret, "gw-shared")[0] == 200
    _, _, listing = http("GET", f"{gateway.url}/v1/models", secret=secret)
    assert [card["id"] for card in json.loads(listing)["data"]] == ["gw-shared"]
    assert http("GET", f"{gateway.url}/v1/models/gw-chat", secret=secret)[0] == 404


def test_a_policy_change_takes_effect_within_a_second(tenant, gateway, redis_cache):
    from apps.policies.services import policy_create, policy_update

    assert chat_status(gateway, tenant.secret)[0] == 200  # the gateway has the (empty) policy cached

    policy = policy_create(actor=None, organization=tenant.organization, allowed_models=["other-*"])
    eventually(lambda: chat_status(gateway, tenant.secret)[0] == 403, timeout=1.0, interval=0, what="403")
    policy_update(policy=policy, actor=None, changes={"allowed_models": []})
    eventually(lambda: chat_status(gateway, tenant.secret)[0] == 200, timeout=1.0, interval=0, what="200 again")


def test_max_tokens_beyond_the_policy_is_refused_and_its_default_is_filled_in(tenant, gateway, redis_cache):
    from apps.policies.services import policy_create

    policy_create(actor=None, organization=tenant.organization, max_tokens_per_request=5)
    status, body = eventually(
        lambda: (answer := chat_status(gateway, tenant.secret, max_tokens=10))[0] != 200 and answer,
        timeout=1.0,
        interval=0,
        what="the policy's limit applied",
    )
    assert status == 400
    assert body["error"]["code"] == "max_tokens_exceeded"
    without = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=without, secret=tenant.secret)
    assert status == 200
    assert json.loads(raw)["usage"]["completion_tokens"] == 5  # the engine was told the policy's default
