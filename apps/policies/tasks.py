"""Celery tasks of the policies app."""

from __future__ import annotations

from celery import shared_task

from apps.policies.budget_alerts import budget_thresholds_announce
from apps.policies.reconcile import policy_counters_reconcile, policy_holds_release
from inferia_runtime.redis_clients import redis_failover_seen, sync_redis


@shared_task(time_limit=120)
def policy_counters_reconcile_periodic() -> int:
    """Beat's reconciliation of quota and budget counters from usage records (idempotent; never lowers one), and
    the release of reservations left by requests that were never settled. Returns the counters written."""
    client = sync_redis()
    written = policy_counters_reconcile(client=client)
    policy_holds_release(client=client)
    return written


@shared_task(time_limit=120)
def budget_thresholds_announce_periodic() -> int:
    """Beat's scan for budgets past 80% and 100% this period; each crossing is announced once."""
    return budget_thresholds_announce()


@shared_task(time_limit=60, ignore_result=True)
def policy_counters_failover_check() -> int:
    """After a Redis failover (or a restart) the counters the old master had not replicated are gone: rebuild them
    from the usage records at once rather than at the next periodic reconcile. Cheap when nothing changed."""
    client = sync_redis()
    if not redis_failover_seen(client, watcher="policies"):
        return 0
    return policy_counters_reconcile(client=client)
