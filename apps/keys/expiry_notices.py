"""Keys about to expire: a beat task finds usable keys whose expiry falls within the notice period and announces
each once (`ApiKeyExpiringSoon`). A Redis `SET NX` per key and expiry, kept until a day past that expiry, makes the
announcement once however often the scan runs, on however many workers."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from apps.keys.events import ApiKeyExpiringSoon
from apps.keys.models import ApiKey
from inferia_runtime.events import event_publish
from inferia_runtime.redis_clients import sync_redis

_BATCH = 500


def _claim_key(key_id: int, expires_at: datetime) -> str:
    return f"inferia:keys:expiry-notice:{key_id}:{int(expires_at.timestamp())}"


def api_keys_expiring_announce(*, within: timedelta, now: datetime | None = None) -> int:
    """Announce every usable key expiring within `within` from `now` that was not announced for that expiry yet;
    returns how many were announced."""
    now = now or timezone.now()
    client = sync_redis()
    announced = 0
    last_pk = 0
    while True:
        keys = list(
            ApiKey.objects.filter(
                pk__gt=last_pk, revoked_at__isnull=True, expires_at__gt=now, expires_at__lte=now + within
            )
            .order_by("pk")
            .only("pk", "organization_id", "name", "prefix", "expires_at")[:_BATCH]
        )
        if not keys:
            return announced
        last_pk = keys[-1].pk
        for key in keys:
            assert key.expires_at is not None  # filtered above
            ttl = int((key.expires_at - now).total_seconds()) + 86_400
            if not client.set(_claim_key(key.pk, key.expires_at), "1", nx=True, ex=max(ttl, 60)):
                continue
            event_publish(
                ApiKeyExpiringSoon(
                    organization_id=key.organization_id,
                    key_id=key.pk,
                    name=key.name,
                    prefix=key.prefix,
                    expires_at=key.expires_at,
                )
            )
            announced += 1
