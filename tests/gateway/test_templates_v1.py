"""Prompt templates on /v1: the engine receives the template's messages before the request's own, the template's
model and parameters fill what the request leaves out, and a bad reference or missing variable is a clear 4xx."""

from __future__ import annotations

import json

from apps.policies.prompts.services import prompt_template_create, prompt_template_version_create
from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import scripted_engine

MODEL = "gw-tpl"


def _served_org(gateway, engine_url: str):

    organization = OrganizationFactory(name="Templated", slug="templated")
    _, secret = make_key(organization)
    make_deployment(organization, MODEL, [engine_url])
    wait_until_served(gateway, secret, MODEL)
    first = prompt_template_create(
        actor=None,
        organization=organization,
        name="support",
        messages=[{"role": "system", "content": "You help customers of {{company}}."}],
        variables=[{"name": "company"}],
        model=MODEL,
        params={"temperature": 0.1},
    )
    return organization, secret, first.template


def _chat(gateway, secret: str, **fields):
    body = {"messages": [{"role": "user", "content": "Where is my parcel?"}], "max_tokens": 4, **fields}
    status, _, raw = http("POST", f"{gateway.url}/v1/chat/completions", body=body, secret=secret)
    return status, json.loads(raw)


def test_a_template_puts_its_messages_model_and_parameters_before_the_request(transactional_db, gateway, redis_cache):
    with scripted_engine(["ok"]) as engine:
        _, secret, _ = _served_org(gateway, engine.url)
        status, answer = _chat(gateway, secret, template="support@1", template_variables={"company": "Acme"})
        (received,) = engine.received

    assert status == 200, answer
    assert received["model"] == MODEL
    assert received["temperature"] == 0.1
    assert received["messages"] == [
        {"role": "system", "content": "You help customers of Acme."},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    assert "template" not in received
    assert "template_variables" not in received


def test_the_request_s_own_parameters_win_and_latest_follows_new_versions(transactional_db, gateway, redis_cache):
    with scripted_engine(["ok", "ok"]) as engine:
        _, secret, template = _served_org(gateway, engine.url)
        prompt_template_version_create(
            template=template,
            actor=None,
            messages=[{"role": "system", "content": "Version two for {{company}}."}],
            variables=[{"name": "company"}],
            model=MODEL,
        )
        status, _ = _chat(gateway, secret, model=MODEL, temperature=0.9, template="support",
                          template_variables={"company": "Acme"})  # fmt: skip
        assert status == 200
        (received,) = engine.received

    assert received["temperature"] == 0.9
    assert received["messages"][0]["content"] == "Version two for Acme."


def test_bad_template_references_are_refused_before_the_engine(transactional_db, gateway, redis_cache):
    with scripted_engine(["ok"]) as engine:
        _, secret, _ = _served_org(gateway, engine.url)
        missing_variable = _chat(gateway, secret, model=MODEL, template="support@1")
        unknown = _chat(gateway, secret, model=MODEL, template="nope@1")
        wrong_type = _chat(gateway, secret, model=MODEL, template=["support"])
        assert engine.received == []

    assert missing_variable[0] == 400
    assert missing_variable[1]["error"]["code"] == "template_variables_invalid"
    assert "company" in missing_variable[1]["error"]["message"]
    assert unknown[0] == 404
    assert unknown[1]["error"]["code"] == "template_not_found"
    assert wrong_type[0] == 400
    assert wrong_type[1]["error"]["param"] == "template"


def test_another_organisation_s_template_is_not_found(transactional_db, gateway, redis_cache):

    with scripted_engine(["ok"]) as engine:
        _served_org(gateway, engine.url)
        stranger = OrganizationFactory(name="Stranger", slug="stranger")
        _, stranger_secret = make_key(stranger)
        make_deployment(stranger, MODEL, [engine.url])
        wait_until_served(gateway, stranger_secret, MODEL)
        status, answer = _chat(gateway, stranger_secret, model=MODEL, template="support@1",
                               template_variables={"company": "Acme"})  # fmt: skip
        assert engine.received == []

    assert status == 404
    assert answer["error"]["code"] == "template_not_found"
