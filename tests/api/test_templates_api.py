"""The prompt template REST API: create, versions, diff, render preview, team grants, and tenant boundaries."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.orgs.models import Membership
from apps.policies.models import PromptTemplate, PromptTemplateVersion
from apps.policies.prompts.services import prompt_template_create

BODY = {
    "name": "support",
    "description": "Help desk",
    "messages": [{"role": "system", "content": "You support {{product}}."}, {"role": "user", "content": "{{q}}"}],
    "variables": [{"name": "product", "default": "Inferia"}, {"name": "q"}],
    "model": "acme-model",
    "params": {"temperature": 0.1},
}


@pytest.fixture
def support(acme, owner, as_user):
    response = as_user(owner).post("/api/templates/", {**BODY, "organization": acme.org.pk}, format="json")
    assert response.status_code == 201, response.data
    return PromptTemplate.objects.get(pk=response.data["id"])


def test_an_owner_creates_a_template_with_its_first_version(acme, owner, as_user):
    response = as_user(owner).post(
        "/api/templates/", {**BODY, "organization": acme.org.pk}, format="json", HTTP_USER_AGENT="pytest-agent"
    )
    assert response.status_code == 201, response.data
    assert response.data["latest_version"] == 1
    assert response.data["latest"]["ref"] == "support@1"
    assert response.data["latest"]["messages"] == BODY["messages"]
    assert response.data["latest"]["created_by"] == owner.pk
    event = AuditEvent.objects.get(action="prompt_template.create", target_id=str(response.data["id"]))
    assert (event.actor_user_id, event.user_agent) == (owner.pk, "pytest-agent")


def test_bad_content_is_a_400_naming_the_field(acme, owner, as_user):
    body = {**BODY, "organization": acme.org.pk, "messages": [{"role": "user", "content": "{{user.password}}"}]}
    response = as_user(owner).post("/api/templates/", body, format="json")
    assert response.status_code == 400
    assert "messages" in response.data
    assert not PromptTemplate.objects.filter(name="support").exists()


def test_versions_are_added_listed_and_diffed(support, owner, as_user):
    client = as_user(owner)
    url = f"/api/templates/{support.pk}/"
    new = {**BODY, "messages": [{"role": "system", "content": "Be brief about {{product}}. {{q}}"}], "note": "terse"}
    added = client.post(f"{url}versions/", new, format="json")
    assert added.status_code == 201, added.data
    assert (added.data["version"], added.data["ref"], added.data["note"]) == (2, "support@2", "terse")
    listed = client.get(f"{url}versions/")
    assert [v["version"] for v in listed.data["results"]] == [2, 1]
    diff = client.get(f"{url}diff/?from=1&to=2")
    assert diff.status_code == 200
    assert '-      "content": "You support {{product}}."' in diff.data["diff"]
    assert '+      "content": "Be brief about {{product}}. {{q}}"' in diff.data["diff"]
    assert client.get(f"{url}diff/?from=1").data["to_version"] == 2  # `to` defaults to the latest
    assert client.get(f"{url}diff/?from=1&to=9").status_code == 404
    assert client.get(f"{url}diff/?to=1").status_code == 400


def test_a_version_is_never_edited_in_place(support, owner, as_user):
    client = as_user(owner)
    response = client.patch(f"/api/templates/{support.pk}/", {"description": "new words"}, format="json")
    assert response.status_code == 200
    assert response.data["latest_version"] == 1
    refused = client.patch(f"/api/templates/{support.pk}/", {"messages": []}, format="json")
    assert refused.status_code == 400  # description is the only editable field
    assert PromptTemplateVersion.objects.get(template=support).messages == BODY["messages"]


def test_the_render_preview_shows_what_v1_would_send(support, owner, as_user):
    client = as_user(owner)
    url = f"/api/templates/{support.pk}/render/"
    ok = client.post(url, {"variables": {"q": "How fast?"}}, format="json")
    assert ok.status_code == 200, ok.data
    assert ok.data["messages"] == [
        {"role": "system", "content": "You support Inferia."},
        {"role": "user", "content": "How fast?"},
    ]
    assert (ok.data["model"], ok.data["params"], ok.data["template"]) == (
        "acme-model",
        {"temperature": 0.1},
        "support@1",
    )
    missing = client.post(url, {"variables": {}}, format="json")
    assert missing.status_code == 400
    assert "q" in str(missing.data["variables"])
    extra = client.post(url, {"variables": {"q": "x", "intruder": "y"}}, format="json")
    assert extra.status_code == 400
    assert "intruder" in str(extra.data["variables"])
    assert client.post(url, {"version": "7", "variables": {"q": "x"}}, format="json").status_code == 404


def test_a_viewer_reads_and_previews_but_changes_nothing(support, viewer, as_user, acme):
    client = as_user(viewer)
    url = f"/api/templates/{support.pk}/"
    assert client.get(url).status_code == 200
    assert client.post(f"{url}render/", {"variables": {"q": "x"}}, format="json").status_code == 200
    assert client.post(f"{url}versions/", BODY, format="json").status_code == 403
    assert client.patch(url, {"description": "x"}, format="json").status_code == 403
    assert client.delete(url).status_code == 403
    assert (
        client.post("/api/templates/", {**BODY, "name": "v", "organization": acme.org.pk}, format="json").status_code
        == 403
    )
    assert PromptTemplateVersion.objects.filter(template=support).count() == 1


def test_a_team_granted_a_template_may_version_that_one_only(support, acme, owner, member, as_user):
    other = prompt_template_create(
        actor=owner, organization=acme.org, name="other", messages=[{"role": "user", "content": "hi"}]
    ).template
    Membership.objects.get(user=member).teams.add(acme.team)
    client = as_user(member)
    assert client.post(f"/api/templates/{support.pk}/versions/", BODY, format="json").status_code == 403
    granted = as_user(owner).post(
        f"/api/templates/{support.pk}/grant/", {"actions": ["change"], "team": acme.team.pk}, format="json"
    )
    assert granted.status_code == 204
    assert client.post(f"/api/templates/{support.pk}/versions/", BODY, format="json").status_code == 201
    assert client.post(f"/api/templates/{other.pk}/versions/", BODY, format="json").status_code == 403
    assert client.delete(f"/api/templates/{support.pk}/").status_code == 403


def test_another_organisation_cannot_see_use_or_version_a_template(support, globex, outsider, as_user, as_key):
    key = api_key_create(organization=globex.org, name="atk", scopes=["read", "manage"])
    for client in (as_user(outsider), as_key(key.secret)):
        url = f"/api/templates/{support.pk}/"
        assert client.get(url).status_code == 404
        assert client.get(f"{url}versions/").status_code == 404
        assert client.post(f"{url}versions/", BODY, format="json").status_code == 404
        assert client.get(f"{url}diff/?from=1&to=1").status_code == 404
        assert client.post(f"{url}render/", {"variables": {"q": "x"}}, format="json").status_code == 404
        assert client.patch(url, {"description": "pwned"}, format="json").status_code == 404
        assert client.delete(url).status_code == 404
        listed = client.get("/api/templates/")
        assert support.pk not in [row["id"] for row in listed.data["results"]]
        assert client.get(f"/api/templates/?organization={support.organization_id}").data["count"] == 0
        # Creating a template inside the other organisation reads as "no such organisation".
        sneaky = client.post(
            "/api/templates/", {**BODY, "name": "sneaky", "organization": support.organization_id}, format="json"
        )
        assert sneaky.status_code == 400
        assert "organization" in sneaky.data
    assert not PromptTemplate.objects.filter(name="sneaky").exists()
    assert PromptTemplateVersion.objects.filter(template=support).count() == 1
    support.refresh_from_db()
    assert support.description == "Help desk"


def test_the_list_has_a_fixed_query_count(acme, owner, as_user, django_assert_num_queries):
    client = as_user(owner)
    client.get("/api/templates/")  # warm the content-type cache, as any running process has
    with CaptureQueriesContext(connection) as few:
        assert client.get("/api/templates/").status_code == 200
    expected = len(few)
    for i in range(5):
        prompt_template_create(
            actor=owner, organization=acme.org, name=f"t{i}", messages=[{"role": "user", "content": "hi"}]
        )
    with django_assert_num_queries(expected):
        assert client.get("/api/templates/").data["count"] == 6
    assert expected == 4


def test_the_version_list_has_a_fixed_query_count(support, owner, as_user, django_assert_num_queries):
    client = as_user(owner)
    url = f"/api/templates/{support.pk}/versions/"
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    expected = len(few)  # read now: each request below resets Django's query log
    for _ in range(4):
        client.post(url, BODY, format="json")
    with django_assert_num_queries(expected):
        assert len(client.get(url).data["results"]) == 5
