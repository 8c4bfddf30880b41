"""API keys through the REST API: shown once, listed without secrets, rotated with a grace period, revoked."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create, hash_key


def _create(client, org, **extra):
    return client.post("/api/keys/", {"organization": org.pk, "name": "ci", "scopes": ["read"], **extra}, format="json")


def test_it_shows_the_secret_once_and_stores_only_its_hash(acme, owner, as_user):
    response = _create(as_user(owner), acme.org)
    assert response.status_code == 201, response.data
    secret = response.data["secret"]
    assert secret.startswith("sk-inf-")
    assert secret.startswith(response.data["prefix"])
    key = ApiKey.objects.get(pk=response.data["id"])
    assert key.secret_hash == hash_key(secret)
    assert key.owner == owner
    again = as_user(owner).get(f"/api/keys/{key.pk}/")
    assert "secret" not in again.data
    assert "secret_hash" not in again.data
    assert secret not in str(as_user(owner).get("/api/keys/").content)


def test_the_list_shows_prefix_last_use_and_usage_to_date(acme, owner, as_user, as_key):
    assert as_key(acme.key.secret).get("/api/organizations/").status_code == 200
    rows = {row["id"]: row for row in as_user(owner).get("/api/keys/").data["results"]}
    row = rows[acme.key.key.pk]
    assert row["prefix"] == acme.key.key.prefix
    assert row["last_used_at"] is not None
    assert (row["requests_to_date"], row["tokens_to_date"], row["cost_micros_to_date"]) == (1, 30, 300)


def test_a_key_authenticates_and_a_wrong_one_does_not(acme, as_key):
    assert as_key(acme.key.secret).get("/api/teams/").status_code == 200
    wrong = as_key(acme.key.secret[:-2] + "xx").get("/api/teams/")
    assert wrong.status_code == 401
    assert wrong.data["detail"]


def test_an_inference_only_key_is_refused_by_the_management_api(acme, owner, as_key):
    issued = api_key_create(organization=acme.org, name="app", scopes=["inference"], actor=owner, owner=owner)
    response = as_key(issued.secret).get("/api/keys/")
    assert response.status_code == 403
    assert "scope" in response.data["detail"]


def test_a_read_key_cannot_write(acme, as_key):
    response = as_key(acme.service_key.secret).post(
        "/api/teams/", {"organization": acme.org.pk, "name": "x", "slug": "x"}, format="json"
    )
    assert response.status_code == 403


def test_a_member_issues_personal_keys_but_not_service_keys(acme, member, as_user):
    assert _create(as_user(member), acme.org).status_code == 201
    assert _create(as_user(member), acme.org, service=True).status_code == 403


def test_a_member_cannot_revoke_a_colleagues_key(acme, member, as_user):
    response = as_user(member).post(f"/api/keys/{acme.key.key.pk}/revoke/", {}, format="json")
    assert response.status_code == 403
    assert ApiKey.objects.get(pk=acme.key.key.pk).revoked_at is None


def test_revoking_stops_the_key_at_once_and_is_audited(acme, owner, as_user, as_key):
    client = as_key(acme.key.secret)
    assert client.get("/api/teams/").status_code == 200
    response = as_user(owner).post(
        f"/api/keys/{acme.key.key.pk}/revoke/", {"reason": "leaked"}, format="json", HTTP_USER_AGENT="pytest-ua"
    )
    assert response.status_code == 200
    assert client.get("/api/teams/").status_code == 401
    event = AuditEvent.objects.filter(action="key.revoke", target_id=str(acme.key.key.pk)).get()
    assert (event.actor_user_id, event.user_agent, event.ip_address) == (owner.pk, "pytest-ua", "127.0.0.1")


def test_rotation_keeps_the_old_secret_for_the_grace_period(acme, owner, as_user, as_key):
    response = as_user(owner).post(f"/api/keys/{acme.key.key.pk}/rotate/", {"grace_seconds": 3600}, format="json")
    assert response.status_code == 201, response.data
    new_secret = response.data["secret"]
    assert new_secret != acme.key.secret
    assert response.data["rotated_from"] == acme.key.key.pk
    assert response.data["scopes"] == acme.key.key.scopes
    assert as_key(new_secret).get("/api/teams/").status_code == 200
    assert as_key(acme.key.secret).get("/api/teams/").status_code == 200
    old = ApiKey.objects.get(pk=acme.key.key.pk)
    assert old.revoked_at > timezone.now()
    assert as_user(owner).post(f"/api/keys/{old.pk}/rotate/", {}, format="json").status_code == 400


def test_rotation_without_grace_ends_the_old_secret_now(acme, owner, as_user, as_key):
    response = as_user(owner).post(f"/api/keys/{acme.key.key.pk}/rotate/", {"grace_seconds": 0}, format="json")
    assert response.status_code == 201
    assert as_key(acme.key.secret).get("/api/teams/").status_code == 401
    assert as_key(response.data["secret"]).get("/api/teams/").status_code == 200


def test_an_expired_key_is_refused(acme, owner, as_key):
    issued = api_key_create(
        organization=acme.org,
        name="old",
        scopes=["read"],
        owner=owner,
        actor=owner,
        expires_at=timezone.now() + timezone.timedelta(hours=1),
    )
    ApiKey.objects.filter(pk=issued.key.pk).update(expires_at=timezone.now() - timezone.timedelta(seconds=1))
    assert as_key(issued.secret).get("/api/teams/").status_code == 401


def test_a_key_cannot_be_issued_already_expired(acme, owner, as_user):
    past = (timezone.now() - timezone.timedelta(minutes=1)).isoformat()
    response = _create(as_user(owner), acme.org, expires_at=past)
    assert response.status_code == 400, response.data
    assert "past" in str(response.data)
    assert not ApiKey.objects.filter(name="ci").exists()
    future = (timezone.now() + timezone.timedelta(days=1)).isoformat()
    assert _create(as_user(owner), acme.org, expires_at=future).status_code == 201


def test_the_service_refuses_an_expiry_in_the_past_for_every_entry_point(acme, owner):
    with pytest.raises(ValueError, match="past"):
        api_key_create(organization=acme.org, name="old", scopes=["read"], actor=owner, expires_at=timezone.now())


def test_a_key_cannot_be_issued_in_another_organisation(acme, globex, owner, as_user):
    response = _create(as_user(owner), globex.org)
    assert response.status_code == 400
    assert "organization" in response.data


def test_a_key_cannot_be_bound_to_a_foreign_team(acme, globex, owner, as_user):
    response = _create(as_user(owner), acme.org, team=globex.team.pk)
    assert response.status_code == 400
    assert "team" in response.data
