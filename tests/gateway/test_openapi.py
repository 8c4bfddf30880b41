"""`/v1/openapi.json` describes the inference API from the models the gateway validates with."""

from __future__ import annotations

import json

from apps.gateway.schemas import ChatCompletionRequest
from tests.gateway.conftest import http


def test_the_schema_is_published_from_the_gateways_own_models(client):
    response = client.get("/v1/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/v1/models/{model}"} <= set(
        document["paths"]
    )
    chat = document["components"]["schemas"]["ChatCompletionRequest"]
    assert set(chat["required"]) == {"model", "messages"}
    assert set(ChatCompletionRequest.model_fields) <= set(chat["properties"])
    assert chat.get("additionalProperties", True) is not False  # vendor fields pass through
    responses = document["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "413", "429", "502", "503"} <= set(responses)
    assert document["components"]["securitySchemes"]["ApiKeyBearer"]["scheme"] == "bearer"


def test_anthropics_messages_are_described_with_their_own_errors(client):
    document = client.get("/v1/openapi.json").json()
    messages = document["paths"]["/v1/messages"]["post"]
    assert set(document["components"]["schemas"]["MessagesRequest"]["required"]) == {"model", "messages", "max_tokens"}
    assert messages["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnthropicError")
    assert {"ApiKeyBearer", "AnthropicApiKey"} <= {name for scheme in messages["security"] for name in scheme}
    assert "/v1/messages/count_tokens" in document["paths"]


def test_the_responses_api_is_described(client):
    document = client.get("/v1/openapi.json").json()
    assert {"post"} <= set(document["paths"]["/v1/responses"])
    assert {"get", "delete"} <= set(document["paths"]["/v1/responses/{response_id}"])
    assert set(document["components"]["schemas"]["ResponsesRequest"]["required"]) == {"model", "input"}


def test_the_web_process_serves_it_next_to_the_gateway(tenant, gateway):
    status, _, raw = http("GET", f"{gateway.url}/v1/openapi.json")
    assert status == 200
    assert "/v1/chat/completions" in json.loads(raw)["paths"]
    assert http("GET", f"{gateway.url}/v1/docs")[0] == 200
