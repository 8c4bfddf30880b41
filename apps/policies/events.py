"""What the policies domain announces, after commit, to whoever subscribes (see inferia_runtime/events.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BudgetThresholdCrossed:
    """A policy's daily or monthly budget passed `percent` (80 or 100) of its amount in the period `period_id`
    (YYYYMMDD or YYYYMM). Announced once per threshold, policy and period (`budget_thresholds_announce`)."""

    organization_id: int
    policy_id: int
    target: str
    period: str  # "day" or "month"
    period_id: str
    percent: int
    budget_micros: int
    used_micros: int
