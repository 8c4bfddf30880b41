"""External deployments and LoRA adapters through the real web process.

An external deployment's upstream serves its own model id and may want an API key: the gateway sends `model` as the
upstream knows it and the provider's key as a bearer token, answers under the served name the client asked for, and
connects only through the SSRF-guarded client. A LoRA adapter is a model name of its own on its deployment's
replicas, listed with its parent, passed through unchanged, and governed by allow-lists like any model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.factories import ComputePoolFactory, OrganizationFactory, ProviderFactory, deployment_serving
from tests.gateway.conftest import http, make_key, wait_until_served
from tests.gateway.stand_ins import ScriptedEngine, scripted_engine
from tests.kit.processes import TestProcess

UPSTREAM_MODEL = "upstream-org/upstream-model"
UPSTREAM_KEY = "sk-upstream-secret"


@pytest.fixture
def engine() -> Iterator[ScriptedEngine]:
    with scripted_engine(["Hel", "lo"]) as running:
        yield running


def _deployment(organization: Any, name: str, endpoint: str, *, kind: str, credentials: dict | None = None, **fields):
    from django.db import transaction

    with transaction.atomic():
        provider = ProviderFactory(
            organization=organization, name=f"{kind}-{name}", kind=kind, credentials=credentials or {}
        )
        pool = ComputePoolFactory(organization=organization, provider=provider, name=f"pool-{name}")
        deployment, _replicas = deployment_serving(
            organization, name, [endpoint], pool=pool, model_id=fields.pop("model_id", ""), **fields
        )
    return deployment


def _chat(gateway: TestProcess, secret: str, model: str, **fields: Any) -> tuple[int, bytes]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **fields}
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret)
    return status, raw


@pytest.fixture
def organization(transactional_db: Any) -> Any:

    return OrganizationFactory(name="Acme", slug="acme")


def test_an_external_deployment_gets_its_model_id_and_api_key_and_answers_under_the_served_name(
    organization, engine, private_gateway, redis_cache
):
    _key, secret = make_key(organization)
    _deployment(organization, "gw-ext", engine.url, kind="external", model_id=UPSTREAM_MODEL,
                credentials={"api_key": UPSTREAM_KEY})  # fmt: skip
    wait_until_served(private_gateway, secret, "gw-ext")

    status, raw = _chat(private_gateway, secret, "gw-ext")
    assert status == 200, raw
    assert json.loads(raw)["model"] == "gw-ext"
    assert engine.received[-1]["model"] == UPSTREAM_MODEL
    assert engine.headers[-1]["Authorization"] == f"Bearer {UPSTREAM_KEY}"

    status, raw = _chat(private_gateway, secret, "gw-ext", stream=True)
    assert status == 200
    chunks = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: {")]
    assert chunks
    assert {chunk["model"] for chunk in chunks} == {"gw-ext"}
    assert UPSTREAM_KEY.encode() not in raw
    assert UPSTREAM_KEY not in private_gateway.output


def test_a_deployment_inferia_runs_gets_the_body_unchanged_and_no_api_key(organization, engine, private_gateway):
    _key, secret = make_key(organization)
    _deployment(organization, "gw-own", engine.url, kind="simulator", model_id=UPSTREAM_MODEL)
    wait_until_served(private_gateway, secret, "gw-own")

    status, _raw = _chat(private_gateway, secret, "gw-own")

    assert status == 200
    assert engine.received[-1]["model"] == "gw-own"
    assert "Authorization" not in engine.headers[-1]


def test_an_external_endpoint_on_a_private_address_is_refused_unless_allowed(organization, engine, gateway):
    _key, secret = make_key(organization)
    _deployment(organization, "gw-ext-private", engine.url, kind="external", model_id=UPSTREAM_MODEL)
    wait_until_served(gateway, secret, "gw-ext-private")

    status, raw = _chat(gateway, secret, "gw-ext-private")

    assert status == 502, raw
    assert engine.received == []


def test_a_lora_adapter_is_a_model_of_its_own_listed_with_its_parent(organization, engine, private_gateway):
    _key, secret = make_key(organization)
    lora = {"enable_lora": True, "lora_modules": [{"name": "gw-sql", "path": "org/sql-lora"}]}
    _deployment(organization, "gw-base", engine.url, kind="simulator", model_id="org/base", engine_args=lora)
    wait_until_served(private_gateway, secret, "gw-sql")

    status, raw = _chat(private_gateway, secret, "gw-sql")
    assert status == 200, raw
    assert json.loads(raw)["model"] == "gw-sql"
    assert engine.received[-1]["model"] == "gw-sql"
    _, _, listing = http("GET", f"{private_gateway.url}/v1/models", secret=secret)
    cards = {card["id"]: card for card in json.loads(listing)["data"]}
    assert set(cards) == {"gw-base", "gw-sql"}
    assert cards["gw-sql"]["parent"] == "gw-base"
    assert "parent" not in cards["gw-base"]


def test_allow_lists_govern_a_lora_adapter_by_its_own_name(organization, engine, private_gateway):
    from apps.keys.services import api_key_create

    lora = {"enable_lora": True, "lora_modules": {"gw-sql": "org/sql-lora"}}
    _deployment(organization, "gw-base", engine.url, kind="simulator", model_id="org/base", engine_args=lora)
    secret = api_key_create(
        organization=organization, name="base only", scopes=["inference"], allowed_models=["gw-base"]
    ).secret
    wait_until_served(private_gateway, secret, "gw-base")

    status, raw = _chat(private_gateway, secret, "gw-sql")

    assert status == 403
    assert json.loads(raw)["error"]["code"] == "model_not_allowed"
    assert _chat(private_gateway, secret, "gw-base")[0] == 200
    _, _, listing = http("GET", f"{private_gateway.url}/v1/models", secret=secret)
    assert [card["id"] for card in json.loads(listing)["data"]] == ["gw-base"]
