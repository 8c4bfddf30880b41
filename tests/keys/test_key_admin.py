"""API keys in Django admin go through the keys' services: edits limited to what a key may change, audited and
purged from the gateways' caches; revocation by an action that audits and purges; no deletion."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.keys.cache import NEGATIVE_VALUE, principal_cache_key
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create

CHANGELIST = "/admin/keys/apikey/"


@pytest.fixture
def key(org):
    return api_key_create(organization=org, name="ci", scopes=["inference"]).key


def test_a_change_saves_only_what_the_service_allows_and_is_audited(client, root, key):
    page = client.get(f"{CHANGELIST}{key.pk}/change/").content.decode()
    response = client.post(
        f"{CHANGELIST}{key.pk}/change/",
        {"name": "ci-renamed", "allowed_models": "", "scopes": "inference,manage", "revoked_at_0": "2020-01-01"},
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert 'name="scopes"' not in page
    assert 'name="revoked_at_0"' not in page
    key.refresh_from_db()
    assert key.name == "ci-renamed"
    assert key.scopes == ["inference"]
    assert key.revoked_at is None
    event = AuditEvent.objects.get(action="key.update", target_id=str(key.pk))
    assert event.actor_user_id == root.pk
    assert "ci-renamed" in str(event.changes)


def test_the_revoke_action_audits_and_purges_every_gateways_cache(
    client, root, key, redis_cache, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(CHANGELIST, {"action": "revoke_selected", "_selected_action": [key.pk]})

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.get(action="key.revoke", target_id=str(key.pk)).actor_user_id == root.pk
    assert redis_cache.get(principal_cache_key(key.secret_hash)) == NEGATIVE_VALUE  # the gateways' tombstone


def test_keys_are_never_deleted_in_admin(client, root, key):
    assert client.get(f"{CHANGELIST}{key.pk}/delete/").status_code == 403
    client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"})
    assert ApiKey.objects.filter(pk=key.pk).exists()
