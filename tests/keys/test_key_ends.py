"""The audit log records, once, every key that stops working by itself: an expiry or the end of a rotation's grace."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create, api_key_ends_record, api_key_revoke, api_key_rotate


def _expire_events(key: ApiKey) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="key.expire", target_id=str(key.pk)))


def test_an_expired_key_is_recorded_once_with_its_organisation_and_time(org, db):
    now = timezone.now()
    expired = api_key_create(organization=org, name="old", scopes=["inference"], expires_at=now + timedelta(minutes=5))
    ApiKey.objects.filter(pk=expired.key.pk).update(expires_at=now - timedelta(minutes=5))  # time passed
    later = api_key_create(organization=org, name="later", scopes=["inference"], expires_at=now + timedelta(days=1))
    forever = api_key_create(organization=org, name="forever", scopes=["inference"])

    assert api_key_ends_record(now=now) == 1
    assert api_key_ends_record(now=now) == 0  # a second run records nothing again

    [event] = _expire_events(expired.key)
    assert event.organization_id == org.pk
    assert event.actor_label == "system"
    assert event.changes == {"reason": "expired", "at": (now - timedelta(minutes=5)).isoformat()}
    assert not _expire_events(later.key)
    assert not _expire_events(forever.key)

    assert api_key_ends_record(now=now + timedelta(days=2)) == 1  # its turn comes
    assert len(_expire_events(later.key)) == 1


def test_a_revoked_key_is_not_recorded_again_as_expired(org, db):
    now = timezone.now()
    issued = api_key_create(organization=org, name="app", scopes=["inference"], expires_at=now + timedelta(hours=1))
    api_key_revoke(key=issued.key, reason="leaked")

    assert api_key_ends_record(now=now + timedelta(hours=2)) == 0
    assert not _expire_events(issued.key)
    assert AuditEvent.objects.filter(action="key.revoke", target_id=str(issued.key.pk)).count() == 1


def test_the_end_of_a_rotation_grace_is_recorded_when_it_passes(org, owner, db):
    issued = api_key_create(organization=org, name="app", scopes=["inference"])
    api_key_rotate(key=issued.key, actor=owner, grace=timedelta(hours=1))
    now = timezone.now()

    assert api_key_ends_record(now=now) == 0  # still in its grace period
    assert api_key_ends_record(now=now + timedelta(hours=2)) == 1
    [event] = _expire_events(issued.key)
    assert event.changes["reason"] == "rotation grace ended"
    assert ApiKey.objects.get(pk=issued.key.pk).end_recorded_at is not None
