"""Two `Authorization` headers name two callers: /v1 refuses them exactly as /api does, instead of picking one."""

from __future__ import annotations

import http.client
import json

from tests.gateway.conftest import make_key

CHAT_BODY = {"model": "gw-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def request(gateway, method: str, path: str, authorizations: list[str], body: bytes = b"") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        connection.putrequest(method, path)
        for value in authorizations:
            connection.putheader("Authorization", value)  # http.client sends each one, never merges them
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def test_it_refuses_two_authorization_headers_on_v1_and_api(tenant, gateway):
    _, read_secret = make_key(tenant.organization, scopes=("inference", "read"))
    body = json.dumps(CHAT_BODY).encode()
    chat, deployments = "/v1/chat/completions", "/api/deployments/"
    # Each key alone is good on both, so a 401 below is about the pair.
    assert request(gateway, "POST", chat, [f"Bearer {read_secret}"], body)[0] == 200
    assert request(gateway, "GET", deployments, [f"Bearer {read_secret}"])[0] == 200

    for pair in ([read_secret, tenant.secret], [read_secret, read_secret], ["sk-inf-unknown", read_secret]):
        authorizations = [f"Bearer {secret}" for secret in pair]
        status, document = request(gateway, "POST", chat, authorizations, body)
        assert status == 401
        assert document["error"]["code"] == "invalid_api_key"
        assert set(document["error"]) == {"message", "type", "param", "code"}
        status, document = request(gateway, "GET", deployments, authorizations)
        assert status == 401
        assert "detail" in document  # DRF's shape on /api
