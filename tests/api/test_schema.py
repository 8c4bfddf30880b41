"""The OpenAPI 3 schema is served, documents every route, and is a valid OpenAPI document."""

from __future__ import annotations

from openapi_spec_validator import validate

from tests.api.test_isolation import ROUTES


def test_the_schema_is_valid_openapi_3(db, client):
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    validate(schema)


def test_the_schema_documents_every_routed_endpoint(db, client):
    paths = set(client.get("/api/schema/", {"format": "json"}).json()["paths"])
    documented = {path.replace("{seq}", "{id}") for path in (p.replace("{pk}", "{id}") for p in paths)}
    routed = {route.path for route in ROUTES if route.path not in {"/api/", "/api/schema/", "/api/docs/"}}
    assert routed <= documented, routed - documented


def test_the_schema_declares_key_and_session_authentication(db, client):
    schemes = client.get("/api/schema/", {"format": "json"}).json()["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "http", "scheme": "bearer", "bearerFormat": "sk-inf-..."}
    assert "cookieAuth" in schemes


def test_the_docs_page_is_served(db, client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
