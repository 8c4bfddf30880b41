"""Celery tasks of the audit app: the periodic checkpoint of the chain head."""

from __future__ import annotations

from celery import shared_task

from apps.audit.services import audit_checkpoint_take


@shared_task(time_limit=60)
def audit_checkpoint_periodic() -> int:
    """Beat's checkpoint of the chain head (idempotent: nothing new when the head has not moved). Returns its seq."""
    return audit_checkpoint_take(taken_by="beat").seq
