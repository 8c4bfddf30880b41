"""What issued a key, told apart wherever keys are listed: an application's key, the console playground's, or a vector
store's own (purpose `knowledge`). Only Inferia issues the last two: a person asking for one is refused."""

from __future__ import annotations

import io

import pytest

from apps.keys.models import ApiKey
from apps.keys.services import api_key_create
from apps.knowledge.services import store_key_issue
from inferia_cli.remote import table_print
from inferia_cli.remote_keys import KEY_LIST_COLUMNS


@pytest.fixture
def store_key(org):
    return store_key_issue(organization=org, store_id="vs_purpose", model="kb-embed").key


def _create(client, org, **extra):
    return client.post("/api/keys/", {"organization": org.pk, "name": "ci", "scopes": ["read"], **extra}, format="json")


def test_the_rest_list_says_each_keys_purpose(org, owner, as_user, store_key):
    app_key = api_key_create(organization=org, name="app", scopes=["read"], owner=owner, actor=owner).key
    playground = api_key_create(
        organization=org, name="chat", scopes=["inference"], owner=owner, purpose=ApiKey.Purpose.PLAYGROUND
    ).key

    rows = {row["id"]: row for row in as_user(owner).get("/api/keys/").data["results"]}

    assert rows[store_key.pk]["purpose"] == "knowledge"
    assert rows[app_key.pk]["purpose"] == "application"
    assert rows[playground.pk]["purpose"] == "playground"
    assert as_user(owner).get(f"/api/keys/{store_key.pk}/").data["purpose"] == "knowledge"


def test_a_person_cannot_create_a_knowledge_key_through_the_rest_api(org, owner, as_user):
    response = _create(as_user(owner), org, purpose="knowledge")

    assert response.status_code == 400, response.data
    assert "issued by Inferia" in str(response.data["purpose"][0])
    assert not ApiKey.objects.filter(name="ci").exists()


def test_a_person_cannot_create_a_playground_key_through_the_rest_api(org, owner, as_user):
    response = _create(as_user(owner), org, purpose="playground")
    assert response.status_code == 400, response.data
    assert "purpose" in response.data
    assert not ApiKey.objects.filter(name="ci").exists()


def test_an_application_key_may_say_so_or_say_nothing(org, owner, as_user):
    said = _create(as_user(owner), org, purpose="application")
    unsaid = _create(as_user(owner), org)
    assert (said.status_code, unsaid.status_code) == (201, 201)
    assert said.data["purpose"] == unsaid.data["purpose"] == "application"
    assert set(ApiKey.objects.filter(name="ci").values_list("purpose", flat=True)) == {ApiKey.Purpose.APPLICATION}


def test_an_unknown_purpose_is_a_field_error(org, owner, as_user):
    response = _create(as_user(owner), org, purpose="mining")
    assert response.status_code == 400
    assert "purpose" in response.data


def test_a_rotated_store_key_stays_a_store_key(org, store_key):
    from apps.keys.services import api_key_rotate

    rotated = api_key_rotate(key=store_key, actor=None)
    assert rotated.key.purpose == ApiKey.Purpose.KNOWLEDGE


def test_the_cli_key_list_has_a_purpose_column():
    rows = [
        {"prefix": "sk-inf-aaaa", "name": "Knowledge store vs_1", "scopes": ["inference"], "purpose": "knowledge",
         "last_used_at": None, "created_at": "2026-01-01T00:00:00Z", "revoked_at": None, "expires_at": None,
         "is_usable": True},
        {"prefix": "sk-inf-bbbb", "name": "ci", "scopes": ["read"], "purpose": "application",
         "last_used_at": None, "created_at": "2026-01-01T00:00:00Z", "revoked_at": None, "expires_at": None,
         "is_usable": True},
    ]  # fmt: skip
    out = io.StringIO()
    table_print([h for h, _ in KEY_LIST_COLUMNS], [[cell(r) for _, cell in KEY_LIST_COLUMNS] for r in rows], out=out)
    header, first, second = out.getvalue().splitlines()
    assert "PURPOSE" in header.split()
    assert "knowledge" in first.split()
    assert "application" in second.split()
