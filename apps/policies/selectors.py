"""Reading policies: the effective policy of a key, as the gateway caches it."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from apps.keys.models import ApiKey
from apps.policies.effective import EffectivePolicy, effective_policy_compile
from apps.policies.models import GuardrailProfile, Policy


class PolicyKeyNotFound(LookupError):
    """The key does not exist (any more)."""


def policy_list_for_key(*, key: ApiKey) -> QuerySet[Policy]:
    """The policies that apply to a key: its organisation's, its team's (if any) and its own, enabled or not."""
    levels = Q(organization_id=key.organization_id, team__isnull=True, api_key__isnull=True) | Q(api_key_id=key.pk)
    if key.team_id is not None:
        levels |= Q(team_id=key.team_id)
    return Policy.objects.filter(levels).select_related("guardrail_profile")


def guardrail_profile_default() -> GuardrailProfile | None:
    """The platform profile marked default, if an administrator made one."""
    return GuardrailProfile.objects.filter(is_default=True, organization__isnull=True).first()


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
