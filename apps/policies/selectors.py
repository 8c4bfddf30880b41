"""Reading policies: the effective policy of a key, as the gateway caches it, and the spend against budgets (from the
counters the gateway keeps in Redis), for the dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from django.db.models import Q, QuerySet

from apps.keys.models import ApiKey
from apps.policies.effective import (
    EffectivePolicy,
    KnowledgeQuota,
    effective_policy_compile,
    knowledge_quota_compile,
    policy_counter_scope,
)
from apps.policies.guardrails.masking import capture_mask_profile, capture_text_mask
from apps.policies.limits import quota_key
from apps.policies.models import GuardrailProfile, Policy
from inferia_runtime.redis_clients import sync_redis


class PolicyKeyNotFound(LookupError):
    """The key does not exist (any more)."""


def policy_list_for_key(*, key: ApiKey) -> QuerySet[Policy]:
    """The policies that apply to a key: its organisation's, its team's (if any) and its own, enabled or not."""
    levels = Q(organization_id=key.organization_id, team__isnull=True, api_key__isnull=True) | Q(api_key_id=key.pk)
    if key.team_id is not None:
        levels |= Q(team_id=key.team_id)
    return Policy.objects.filter(levels).select_related("guardrail_profile")


def knowledge_quota_for(*, organization_id: int, key_id: int | None = None) -> KnowledgeQuota:
    """The knowledge quotas that apply to the organisation's uploads and ingestion: its own policy's, tightened by
    the team's and the key's policies when a key acts (`key_id`, a key of that organisation). One query."""
    levels = Q(team__isnull=True, api_key__isnull=True)
    if key_id is not None:
        key_team = ApiKey.objects.filter(pk=key_id, organization_id=organization_id).values("team_id")
        levels |= Q(api_key_id=key_id) | Q(team_id__in=key_team)
    policies = Policy.objects.filter(levels, organization_id=organization_id).only(
        "enabled", "knowledge_bytes_max", "knowledge_chunks_max"
    )
    return knowledge_quota_compile(list(policies))


@dataclass(frozen=True)
class GpuQuotas:
    """The GPU quotas of an organisation's own policy and of one of its teams' (None: no quota at that level)."""

    organization: int | None
    team: int | None


def gpu_quotas_for(*, organization_id: int, team_id: int | None) -> GpuQuotas:
    """The GPU quotas a deployment of the organisation, charged to `team_id` (if any), runs under; one query.
    A disabled policy sets none."""
    levels = Q(team__isnull=True, api_key__isnull=True)
    if team_id is not None:
        levels |= Q(team_id=team_id)
    rows = Policy.objects.filter(levels, organization_id=organization_id, enabled=True).values_list(
        "team_id", "gpus_max"
    )
    by_level: dict[int | None, int | None] = dict(rows)
    return GpuQuotas(organization=by_level.get(None), team=by_level.get(team_id) if team_id is not None else None)


def guardrail_profile_default() -> GuardrailProfile | None:
    """The platform profile marked default, if an administrator made one."""
    return GuardrailProfile.objects.filter(is_default=True, organization__isnull=True).first()


def guardrail_profile_config_for_organization(*, organization_id: int) -> dict[str, Any] | None:
    """The guardrail profile configuration an organisation's own policy applies (enabled, with a profile), else the
    platform default profile's; None for the built-in default."""
    policy = (
        Policy.objects.filter(organization_id=organization_id, team__isnull=True, api_key__isnull=True, enabled=True)
        .exclude(guardrail_profile__isnull=True)
        .select_related("guardrail_profile")
        .first()
    )
    if policy is not None and policy.guardrail_profile is not None:
        return policy.guardrail_profile.config()
    default = guardrail_profile_default()
    return default.config() if default is not None else None


def organization_captures_mask(organization_id: int, texts: list[str]) -> list[str]:
    """`texts` captured from an organisation's requests, masked with its guardrail profile's redactions and personal
    data always (`apps.policies.guardrails.masking`). The usage worker calls it through `capture_mask_register`."""
    profile = capture_mask_profile(guardrail_profile_config_for_organization(organization_id=organization_id))
    return [capture_text_mask(profile, text) for text in texts]


def policy_effective_for(*, key_id: int) -> EffectivePolicy:
    """The compiled policy of one key (three small queries). Sync ORM: the gateway calls it through
    `apps.policies.cache.PolicyCache`, which keeps the result per process until a change is published."""
    key = ApiKey.objects.filter(pk=key_id).only("id", "organization_id", "team_id", "allowed_models").first()
    if key is None:
        raise PolicyKeyNotFound(key_id)
    policies = sorted(policy_list_for_key(key=key), key=lambda policy: ("org", "team", "key").index(policy.level))
    needs_default = not any(policy.enabled and policy.guardrail_profile_id for policy in policies)
    default = guardrail_profile_default() if needs_default else None
    return effective_policy_compile(
        key_id=key.pk,
        organization_id=key.organization_id,
        team_id=key.team_id,
        key_allowed_models=tuple(key.allowed_models),
        policies=policies,
        default_profile_config=default.config() if default is not None else None,
    )


@dataclass(frozen=True)
class BudgetBurn:
    """One budget of one policy, against what was spent (settled) and is held (by requests in flight) this period."""

    policy_id: int
    target: str
    period: str  # "day" or "month"
    budget_micros: int
    used_micros: int
    held_micros: int
    organization_slug: str = ""

    @property
    def percent(self) -> float:
        if not self.budget_micros:
            return 0.0
        return min(100.0, 100.0 * (self.used_micros + self.held_micros) / self.budget_micros)

    @property
    def state(self) -> str:
        """ "ok", "warn" (past 80%) or "over" (spent), for the bar's colour."""
        return "over" if self.percent >= 100 else "warn" if self.percent >= 80 else "ok"


def policy_budget_target(policy: Policy) -> str:
    """What a policy's budget applies to, in words ("Team Research"); the key and team come with the policy
    (select_related), so reading them costs no query."""
    if policy.api_key_id is not None and policy.api_key is not None:
        return f"Key {policy.api_key.name} ({policy.api_key.prefix}…)"
    if policy.team_id is not None and policy.team is not None:
        return f"Team {policy.team.name}"
    return f"Organisation {policy.organization.name}"


def budget_burn(
    *, policies: QuerySet[Policy], now: datetime | None = None, limit: int = 50
) -> tuple[list[BudgetBurn], bool]:
    """Every daily and monthly budget of the enabled `policies` (already narrowed by `.restrict()`), with the current
    period's spend from the counters the gateway enforces budgets with (one query, one Redis round trip). Also
    whether Redis answered. At most `limit` policies: pages show 50, the metrics scrape more."""
    now = now or datetime.now(UTC)
    rows = list(
        policies.filter(enabled=True)
        .filter(Q(budget_per_day_micros__isnull=False) | Q(budget_per_month_micros__isnull=False))
        .select_related("organization", "team", "api_key")
        .order_by("organization_id", "team_id", "api_key_id")[:limit]
    )
    day_id, month_id = now.strftime("%Y%m%d"), now.strftime("%Y%m")
    wanted: list[tuple[Policy, str, int, str]] = []
    for policy in rows:
        scope = policy_counter_scope(policy)
        if policy.budget_per_day_micros is not None:
            wanted.append((policy, "day", policy.budget_per_day_micros, quota_key(scope, "d", day_id)))
        if policy.budget_per_month_micros is not None:
            wanted.append((policy, "month", policy.budget_per_month_micros, quota_key(scope, "m", month_id)))
    if not wanted:
        return [], True
    available = True
    try:
        pipe = sync_redis().pipeline(transaction=False)
        for *_, key in wanted:
            pipe.hmget(key, "usd_used", "usd_held")
        answers = pipe.execute()
    except redis.RedisError:
        answers, available = [[None, None]] * len(wanted), False
    burns = [
        BudgetBurn(
            policy_id=policy.pk,
            target=policy_budget_target(policy),
            period=period,
            budget_micros=budget,
            used_micros=int(used or 0),
            held_micros=max(0, int(held or 0)),
            organization_slug=policy.organization.slug,
        )
        for (policy, period, budget, _), (used, held) in zip(wanted, answers, strict=True)
    ]
    return burns, available
