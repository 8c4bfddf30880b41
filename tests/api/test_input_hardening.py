"""What fuzzing the management API found: input that reached PostgreSQL and came back as an HTML 500, answers the
schema did not describe, and the error answers the schema left out. Each is now a 400/404 in DRF's JSON shape, or
an answer that matches its schema."""

from __future__ import annotations

import pytest

from apps.compute.models import Provider
from apps.policies.models import PromptTemplate
from tests.api.test_templates_api import BODY

BIGINT_OVERFLOW = str(2**70)


@pytest.mark.parametrize(
    "query",
    [
        "/api/audit-events/?until=9999-12-31T23:59:59.999999-23:59",  # leaves the calendar in UTC
        "/api/usage/?since=0001-01-01T00:00:00%2B23:59",
        f"/api/providers/?limit={BIGINT_OVERFLOW}",
        f"/api/providers/?offset={BIGINT_OVERFLOW}",
        "/api/providers/?limit=-1",
        "/api/providers/?limit=many",
        "/api/providers/?offset=1.5",
    ],
)
def test_an_out_of_range_filter_or_page_is_a_400_in_json(acme, owner, as_user, query):
    response = as_user(owner).get(query)
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert isinstance(response.json(), dict)


def test_far_moments_with_any_offset_filter_in_utc(acme, owner, as_user):
    client = as_user(owner)
    # PostgreSQL takes offsets up to 15:59 only: this one was a 500.
    assert client.get("/api/audit-events/", {"since": "4687-01-01T00:00:00+23:59"}).json()["count"] == 0
    everything = client.get("/api/audit-events/", {"since": "2000-01-01T23:30:00+23:59"}).json()["count"]
    assert everything == client.get("/api/audit-events/").json()["count"] > 0


def test_a_page_within_range_still_pages(acme, owner, as_user):
    page = as_user(owner).get("/api/audit-events/", {"limit": 1, "offset": 0}).json()
    assert len(page["results"]) == 1
    assert page["next"] is not None


def test_an_id_that_is_not_a_number_is_a_json_404(acme, owner, as_user):
    response = as_user(owner).get("/api/providers/not-a-number/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert as_user(owner).get("/console/no-such-page/").status_code == 404  # elsewhere, Django's own page


@pytest.mark.parametrize("character", ["\u0000", "\u0007", "\u001b"])
def test_a_control_character_in_any_json_string_is_a_400(acme, owner, as_user, character):
    client = as_user(owner)
    template = {**BODY, "organization": acme.org.pk, "messages": [{"role": "user", "content": f"hi{character}"}]}
    provider = {"organization": acme.org.pk, "name": "p", "kind": "simulator", "config": {f"k{character}": "v"}}
    for url, body in [("/api/templates/", template), ("/api/providers/", provider)]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, response.content[:300]
        assert "control characters" in response.json()["detail"]
    assert not PromptTemplate.objects.filter(organization=acme.org, name="support").exists()
    assert not Provider.objects.filter(name="p").exists()


def test_tabs_and_newlines_are_text(acme, owner, as_user):
    body = {**BODY, "organization": acme.org.pk, "messages": [{"role": "user", "content": "{{product}}\t{{q}}\r\n"}]}
    assert as_user(owner).post("/api/templates/", body, format="json").status_code == 201


def test_a_nul_in_a_form_post_is_a_400(acme, owner, as_user):
    response = as_user(owner).post("/api/teams/", {"organization": acme.org.pk, "name": "x\u0000", "slug": "x"})
    assert response.status_code == 400
    assert "control characters" in response.json()["detail"]


def test_an_unhandled_error_is_a_json_500(acme, owner, as_user, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("apps.usage.api.usage_summary", broken)
    response = as_user(owner).get("/api/usage/summary/", {"group_by": "model"})
    assert response.status_code == 500
    assert response.json() == {"detail": "A server error occurred."}


def _operation(client, path: str, method: str = "get") -> dict:
    return client.get("/api/schema/", {"format": "json"}).json()["paths"][path][method]


def test_lists_that_are_not_paged_are_documented_as_lists(db, client):
    for path in ["/api/usage/summary/", "/api/deployments/{id}/events/"]:
        schema = _operation(client, path)["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["type"] == "array", path


def test_the_error_answers_are_documented(db, client):
    detail = {"$ref": "#/components/schemas/ErrorDetail"}
    read = _operation(client, "/api/keys/{id}/")["responses"]
    assert {code: read[code]["content"]["application/json"]["schema"] for code in ("401", "403", "404")} == {
        "401": detail,
        "403": detail,
        "404": detail,
    }
    assert "400" not in read  # nothing to refuse in a read by id
    create = _operation(client, "/api/keys/", "post")["responses"]
    assert create["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ValidationErrors"}
    listing = _operation(client, "/api/keys/")
    assert "400" in listing["responses"]  # filters and pages can be refused
    limit = next(p for p in listing["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 2**63 - 1)
