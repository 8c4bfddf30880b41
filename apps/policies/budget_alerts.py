"""Budget thresholds: which budgets passed 80% and 100% of their amount this period, announced once each.

The gateway settles spend into Redis counters on the hot path and must not do more there; this scan (a beat task)
reads the same counters afterwards, in batches of policies, and announces a `BudgetThresholdCrossed` for each
threshold passed. A Redis `SET NX` per policy, period and threshold, kept until the period is over, makes the
announcement once per crossing however often the scan runs and however many workers run it. Only settled spend
counts: a reservation for a request still in flight may yet be given back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Q

from apps.policies.effective import policy_counter_scope
from apps.policies.events import BudgetThresholdCrossed
from apps.policies.limits import KEY_PREFIX, quota_key
from apps.policies.models import Policy
from apps.policies.selectors import policy_budget_target
from inferia_runtime.events import event_publish
from inferia_runtime.redis_clients import sync_redis

THRESHOLDS = (80, 100)
# Kept past the period's end (a month at most), so a late scan of the period just over still finds the claim.
_CLAIM_TTL_S = 32 * 86_400
_BATCH = 500


def _claim_key(policy_id: int, period: str, period_id: str, percent: int) -> str:
    return f"{KEY_PREFIX}budget-alert:{policy_id}:{period}:{period_id}:{percent}"


def budget_thresholds_announce(*, now: datetime | None = None) -> int:
    """Announce every budget threshold passed in the current day and month that was not announced yet; returns how
    many were announced."""
    now = now or datetime.now(UTC)
    periods = (("day", "d", now.strftime("%Y%m%d")), ("month", "m", now.strftime("%Y%m")))
    client = sync_redis()
    announced = 0
    last_pk = 0
    while True:
        policies = list(
            Policy.objects.filter(enabled=True, pk__gt=last_pk)
            .filter(Q(budget_per_day_micros__isnull=False) | Q(budget_per_month_micros__isnull=False))
            .select_related("organization", "team", "api_key")
            .order_by("pk")[:_BATCH]
        )
        if not policies:
            return announced
        last_pk = policies[-1].pk
        wanted = []
        for policy in policies:
            scope = policy_counter_scope(policy)
            for period, letter, period_id in periods:
                budget = policy.budget_per_day_micros if period == "day" else policy.budget_per_month_micros
                if budget:
                    wanted.append((policy, period, period_id, budget, quota_key(scope, letter, period_id)))
        pipe = client.pipeline(transaction=False)
        for *_, key in wanted:
            pipe.hget(key, "usd_used")
        spent = pipe.execute()
        for (policy, period, period_id, budget, _), used in zip(wanted, spent, strict=True):
            used_micros = int(used or 0)
            for percent in THRESHOLDS:
                if used_micros * 100 < budget * percent:
                    continue
                if not client.set(_claim_key(policy.pk, period, period_id, percent), "1", nx=True, ex=_CLAIM_TTL_S):
                    continue
                event_publish(
                    BudgetThresholdCrossed(
                        organization_id=policy.organization_id,
                        policy_id=policy.pk,
                        target=policy_budget_target(policy),
                        period=period,
                        period_id=period_id,
                        percent=percent,
                        budget_micros=budget,
                        used_micros=used_micros,
                    )
                )
                announced += 1
