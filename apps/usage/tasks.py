"""Celery tasks of usage (queue `usage`): storing the usage stream, pruning raw usage rows and captures."""

from __future__ import annotations

from celery import shared_task

from apps.usage.capture import request_captures_prune
from apps.usage.services import usage_records_prune
from apps.usage.stream import usage_stream_drain


@shared_task(acks_late=True, time_limit=300, ignore_result=True)
def usage_flush() -> int:
    """Store every usage event waiting in the Redis stream (beat runs it every few seconds)."""
    return usage_stream_drain()


@shared_task(acks_late=True, time_limit=1800, ignore_result=True)
def usage_prune() -> int:
    """Delete raw usage records older than INFERIA_USAGE_RETENTION_DAYS (hourly rollups are kept)."""
    return usage_records_prune()


@shared_task(acks_late=True, time_limit=1800, ignore_result=True)
def usage_captures_prune() -> int:
    """Delete captured prompts and answers past their organisation's retention."""
    return request_captures_prune()
