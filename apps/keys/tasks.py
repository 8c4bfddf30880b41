"""Celery tasks of the keys app."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.conf import settings

from apps.keys.expiry_notices import api_keys_expiring_announce
from apps.keys.services import api_key_ends_record


@shared_task(time_limit=120, expires=50)
def api_key_ends_record_periodic() -> int:
    """Beat's record of keys that expired (or whose rotation grace ended) since its last run."""
    return api_key_ends_record()


@shared_task(time_limit=120, expires=3000)
def api_keys_expiring_announce_periodic() -> int:
    """Beat's scan for keys expiring within INFERIA_NOTIFY_KEY_EXPIRY_DAYS; each key is announced once."""
    return api_keys_expiring_announce(within=timedelta(days=settings.INFERIA_NOTIFY_KEY_EXPIRY_DAYS))
