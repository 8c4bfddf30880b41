"""Celery tasks of the keys app."""

from __future__ import annotations

from celery import shared_task

from apps.keys.services import api_key_ends_record


@shared_task(time_limit=120, expires=50)
def api_key_ends_record_periodic() -> int:
    """Beat's record of keys that expired (or whose rotation grace ended) since its last run."""
    return api_key_ends_record()
