"""Celery tasks of the policies app."""

from __future__ import annotations

from celery import shared_task

from apps.policies.reconcile import policy_counters_reconcile, policy_holds_release
from inferia_runtime.redis_clients import sync_redis


@shared_task(time_limit=120)
def policy_counters_reconcile_periodic() -> int:
    """Beat's reconciliation of quota and budget counters from usage records (idempotent; never lowers one), and
    the release of reservations left by requests that were never settled. Returns the counters written."""
    client = sync_redis()
    written = policy_counters_reconcile(client=client)
    policy_holds_release(client=client)
    return written
