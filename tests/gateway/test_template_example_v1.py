"""The example `/v1/chat/completions` body the console's template page shows is one the gateway takes as it is:
its `template` and `template_variables` fields are the ones the gateway reads, and the template's default model
fills the `model` the example leaves out."""

from __future__ import annotations

import json

from apps.policies.prompts.rendering import template_request_example
from apps.policies.prompts.services import prompt_template_create
from tests.factories import OrganizationFactory
from tests.gateway.conftest import http, make_deployment, make_key, wait_until_served
from tests.gateway.stand_ins import scripted_engine

MODEL = "gw-example"


def test_the_example_body_renders_the_template_through_the_gateway(transactional_db, gateway, redis_cache):
    with scripted_engine(["ok"]) as engine:
        organization = OrganizationFactory(name="Example", slug="example")
        _, secret = make_key(organization)
        make_deployment(organization, MODEL, [engine.url])
        wait_until_served(gateway, secret, MODEL)
        version = prompt_template_create(
            actor=None,
            organization=organization,
            name="support-reply",
            messages=[
                {"role": "system", "content": "You answer for {{product}}."},
                {"role": "user", "content": "{{customer}} writes:"},
            ],
            variables=[{"name": "product", "default": "Inferia"}, {"name": "customer"}],
            model=MODEL,
        )
        body = template_request_example(name="support-reply", variables=version.variables, model=version.model)
        status, _, raw = http(
            "POST", f"{gateway.url}/v1/chat/completions", body={**body, "max_tokens": 4}, secret=secret
        )
        (received,) = engine.received

    assert "model" not in body
    assert status == 200, raw
    assert json.loads(raw)["choices"]
    assert received["model"] == MODEL
    assert received["messages"] == [
        {"role": "system", "content": "You answer for Inferia."},
        {"role": "user", "content": "<customer> writes:"},
        {"role": "user", "content": "<the user's message>"},
    ]
