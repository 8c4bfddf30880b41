"""The effective policy of one key: its organisation's, team's and own policies compiled into one immutable value
the gateway caches per key and reads on every request without touching the database."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apps.policies import errors
from apps.policies.guardrails import CompiledProfile, guardrail_profile_compile
from apps.policies.guardrails.engine import _ACTION_RANK

if TYPE_CHECKING:
    from apps.policies.models import Policy


@dataclass(frozen=True, slots=True)
class LevelLimits:
    """The counted limits of one level (organisation, team or key). `scope` names its counters in Redis."""

    scope: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    budget_per_day_micros: int | None = None
    budget_per_month_micros: int | None = None

    @property
    def counted(self) -> bool:
        """Whether this level has any limit that needs a counter."""
        return any(
            value is not None
            for value in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.concurrent_requests,
                self.tokens_per_day,
                self.tokens_per_month,
                self.budget_per_day_micros,
                self.budget_per_month_micros,
            )
        )


@dataclass(frozen=True)
class EffectivePolicy:
    """Everything policy decides about one key's requests, compiled once.

    `levels` are checked and counted together by `limits_admit`; `model_rules` holds one allow-list per level that
    has one (a model must pass every list); `max_tokens_per_request` is the tightest level's;
    `knowledge_flagged_allowed` says whether retrieval may put chunks screening flagged into the key's prompts;
    `responses_store` whether `/v1/responses` answers are stored (an enabled organisation policy says so).
    """

    key_id: int
    organization_id: int
    team_id: int | None
    levels: tuple[LevelLimits, ...] = ()
    model_rules: tuple[tuple[str, ...], ...] = ()
    max_tokens_per_request: int | None = None
    guardrails: CompiledProfile = field(default_factory=lambda: guardrail_profile_compile(None))
    knowledge_flagged_allowed: bool = False
    responses_store: bool = False
    _model_matchers: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        matchers = tuple(
            re.compile("|".join(fnmatch.translate(pattern) for pattern in rule)) for rule in self.model_rules
        )
        object.__setattr__(self, "_model_matchers", matchers)

    @property
    def counted_levels(self) -> tuple[LevelLimits, ...]:
        return tuple(level for level in self.levels if level.counted)

    def limit_tightest(self, name: str) -> int | None:
        """The limit a request meets for one of `LevelLimits`' counted fields (e.g. "budget_per_day_micros"): the
        smallest any level sets, since every level applies; None when no level sets it."""
        return _tightest([getattr(level, name) for level in self.levels])

    def model_allowed(self, model: str) -> bool:
        """Whether every level's allow-list (names or glob patterns) admits `model`."""
        return all(matcher.fullmatch(model) for matcher in self._model_matchers)

    def model_check(self, model: str) -> None:
        """Raise `PolicyDenied` (403 `model_not_allowed`) unless the model is allowed."""
        if not self.model_allowed(model):
            raise errors.model_not_allowed(model)

    def max_tokens_resolve(self, requested: int | None) -> int | None:
        """The max_tokens the request runs with: the policy's limit when it gives none; a request asking for more
        than the limit is refused (400 `max_tokens_exceeded`). None: no limit anywhere and none asked."""
        limit = self.max_tokens_per_request
        if requested is None:
            return limit
        if limit is not None and requested > limit:
            raise errors.max_tokens_exceeded(requested, limit)
        return requested


def _tightest(values: list[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return min(present) if present else None


@dataclass(frozen=True, slots=True)
class KnowledgeQuota:
    """What an organisation may store in its knowledge bases: bytes of uploaded files and chunks in its vector
    stores, None where no level sets a limit. The quantities are the organisation's whole store whichever level
    sets a limit: a team's or key's policy can only lower the ceiling for uploads made with that team's or key's
    keys, as for every other limit."""

    bytes_max: int | None = None
    chunks_max: int | None = None


def knowledge_quota_compile(policies: list[Policy]) -> KnowledgeQuota:
    """The tightest knowledge quotas of the enabled `policies` (the levels that apply to one upload or one store's
    ingestion). Pure: no database access."""
    enabled = [policy for policy in policies if policy.enabled]
    return KnowledgeQuota(
        bytes_max=_tightest([policy.knowledge_bytes_max for policy in enabled]),
        chunks_max=_tightest([policy.knowledge_chunks_max for policy in enabled]),
    )


def knowledge_flagged_allowed_compile(policies: list[Policy]) -> bool:
    """Whether flagged chunks may enter prompts: only when at least one level has a say and every enabled level
    allows them. Keeping them out is the default and the tighter choice, so one level that excludes them wins."""
    enabled = [policy for policy in policies if policy.enabled]
    return bool(enabled) and all(policy.knowledge_flagged_chunks == "allow" for policy in enabled)


def merge_profile_configs(configs: list[dict[str, Any]]) -> dict[str, Any]:
    """One profile from several levels' profiles: the strongest action per category, the union of blocklists,
    patterns and scanners, the lowest toxicity threshold. A lower level can add guardrails but never switch off one a
    level above turned on."""
    merged: dict[str, Any] = {"input": {}, "output": {}, "blocklist": [], "patterns": [], "scanners": []}
    for config in configs:
        for side in ("input", "output"):
            for category, action in (config.get(side) or {}).items():
                current = merged[side].get(category)
                if current is None or _ACTION_RANK.get(action, 0) > _ACTION_RANK.get(current, 0):
                    merged[side][category] = action
        for name in ("blocklist", "patterns", "scanners"):
            for item in config.get(name) or []:
                if item not in merged[name]:
                    merged[name].append(item)
        threshold = config.get("toxicity_threshold")
        if threshold is not None:
            # The lowest threshold is the strictest: a level can tighten the toxicity check, never loosen it.
            merged["toxicity_threshold"] = min(threshold, merged.get("toxicity_threshold", threshold))
    return merged


def effective_policy_compile(
    *,
    key_id: int,
    organization_id: int,
    team_id: int | None,
    key_allowed_models: tuple[str, ...] = (),
    policies: list[Policy],
    default_profile_config: dict[str, Any] | None = None,
) -> EffectivePolicy:
    """Combine the enabled policies of a key's levels (already loaded, profiles selected) into its
    `EffectivePolicy`. Pure: no database access."""
    enabled = [policy for policy in policies if policy.enabled]
    levels = tuple(
        LevelLimits(
            scope=policy_counter_scope(policy),
            requests_per_minute=policy.requests_per_minute,
            tokens_per_minute=policy.tokens_per_minute,
            concurrent_requests=policy.concurrent_requests,
            tokens_per_day=policy.tokens_per_day,
            tokens_per_month=policy.tokens_per_month,
            budget_per_day_micros=policy.budget_per_day_micros,
            budget_per_month_micros=policy.budget_per_month_micros,
        )
        for policy in enabled
    )
    rules = [tuple(policy.allowed_models) for policy in enabled if policy.allowed_models]
    if key_allowed_models:
        rules.append(tuple(key_allowed_models))
    profiles = [policy.guardrail_profile.config() for policy in enabled if policy.guardrail_profile is not None]
    config = merge_profile_configs(profiles) if profiles else default_profile_config
    return EffectivePolicy(
        key_id=key_id,
        organization_id=organization_id,
        team_id=team_id,
        levels=levels,
        model_rules=tuple(rules),
        max_tokens_per_request=_tightest([policy.max_tokens_per_request for policy in enabled]),
        guardrails=guardrail_profile_compile(config),
        knowledge_flagged_allowed=knowledge_flagged_allowed_compile(enabled),
        # Only an organisation's policy may set it (apps.policies.services validates).
        responses_store=any(policy.responses_store for policy in enabled),
    )


def policy_counter_scope(policy: Policy) -> str:
    """Counters belong to the thing a policy is attached to, not to the policy row (recreating a policy keeps the
    spend). The organisation id is in braces: Redis Cluster hashes every counter of a request to one slot."""
    org = f"{{o{policy.organization_id}}}"
    if policy.api_key_id is not None:
        return f"{org}:k{policy.api_key_id}"
    if policy.team_id is not None:
        return f"{org}:t{policy.team_id}"
    return f"{org}:o"
