"""Budgets as Prometheus sees them: the share of each enabled daily or monthly budget spent (settled plus held by
requests in flight) this period, read at scrape time from the counters the gateway enforces budgets with.

Labels: the policy's organisation slug, its id and the period ("day" or "month"): bounded by configured policies.
Every web process reports the same values (aggregate with `max` across scrape targets).
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from apps.policies.models import Policy
from apps.policies.selectors import budget_burn

# Far more than an organisation configures; a bound on the scrape's cost whatever is configured.
BUDGETS_MAX = 2000


class BudgetCollector:
    """A prometheus_client collector of `inferia_budget_used_ratio` (see the module docstring)."""

    def collect(self) -> Iterator[Metric]:
        try:
            burns, available = budget_burn(policies=Policy.objects.all(), limit=BUDGETS_MAX)
        except DatabaseError:
            return
        if not available:
            return  # Redis did not answer: no value beats a made-up zero
        family = GaugeMetricFamily(
            "inferia_budget_used_ratio",
            "Share of a policy's budget spent or held this period (1 = exhausted).",
            labels=["organization", "policy", "period"],
        )
        for burn in burns:
            if burn.budget_micros:
                family.add_metric(
                    [burn.organization_slug, str(burn.policy_id), burn.period],
                    (burn.used_micros + burn.held_micros) / burn.budget_micros,
                )
        yield family
