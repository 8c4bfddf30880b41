"""Changing policies and guardrail profiles. Every write is audited in its own transaction and, once committed,
published so that every gateway process drops the affected effective policies (`apps.policies.cache`)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_diff, audit_record, update_begin
from apps.keys.models import ApiKey
from apps.keys.services import IssuedKey, api_key_create
from apps.orgs.models import Organization, Team, User
from apps.policies.cache import policy_cache_publish
from apps.policies.guardrails import GuardrailConfigError, guardrail_config_check
from apps.policies.models import GuardrailProfile, Policy

POLICY_FIELDS = (
    "enabled",
    "allowed_models",
    *Policy.LIMIT_FIELDS,
    "knowledge_flagged_chunks",
    "responses_store",
    "guardrail_profile",
)
PROFILE_FIELDS = (
    "name", "description", "input_actions", "output_actions", "blocklist", "patterns", "scanners", "toxicity_threshold",
)  # fmt: skip
PROFILE_FIELDS_PLATFORM = (*PROFILE_FIELDS, "is_default")


def _policy_snapshot(policy: Policy) -> dict[str, Any]:
    snapshot = {name: getattr(policy, name) for name in POLICY_FIELDS if name != "guardrail_profile"}
    snapshot["guardrail_profile"] = policy.guardrail_profile_id
    snapshot["allowed_models"] = list(policy.allowed_models)
    return snapshot


def _profile_snapshot(profile: GuardrailProfile) -> dict[str, Any]:
    return {name: getattr(profile, name) for name in PROFILE_FIELDS_PLATFORM}


def _policy_validate(policy: Policy) -> None:
    if policy.team_id is not None and policy.api_key_id is not None:
        raise ValidationError("A policy is attached to an organisation, a team or a key, not several.")
    if policy.team is not None and policy.team.organization_id != policy.organization_id:
        raise ValidationError({"team": "The team belongs to another organisation."})
    if policy.api_key is not None and policy.api_key.organization_id != policy.organization_id:
        raise ValidationError({"api_key": "The key belongs to another organisation."})
    if policy.api_key_id is not None and policy.gpus_max is not None:
        raise ValidationError(
            {"gpus_max": "GPU quotas apply to an organisation or a team; deployments run for no key."}
        )
    if policy.responses_store and (policy.team_id is not None or policy.api_key_id is not None):
        raise ValidationError({"responses_store": "Storing responses is decided by an organisation's policy."})
    profile = policy.guardrail_profile
    if profile is not None and profile.organization_id not in (None, policy.organization_id):
        raise ValidationError({"guardrail_profile": "The profile belongs to another organisation."})
    for pattern in policy.allowed_models:
        if not pattern or len(pattern) > 200:
            raise ValidationError({"allowed_models": "Model names and patterns are 1 to 200 characters."})
    policy.full_clean(validate_unique=False, validate_constraints=False)


def _publish_after_commit(organization_id: int | None) -> None:
    transaction.on_commit(lambda: policy_cache_publish(organization_id=organization_id))


def policy_create(
    *,
    actor: Actor,
    organization: Organization,
    team: Team | None = None,
    api_key: ApiKey | None = None,
    context: AuditContext | None = None,
    **fields: Any,
) -> Policy:
    """Attach a policy to an organisation (no team, no key), one of its teams, or one of its keys.

    `fields` are any of `POLICY_FIELDS`. Raises ValidationError for a foreign team, key or profile, a second
    policy for the same target, or invalid values."""
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise ValidationError(f"Unknown policy fields: {', '.join(sorted(unknown))}")
    policy = Policy(organization=organization, team=team, api_key=api_key, **fields)
    _policy_validate(policy)
    with transaction.atomic():
        taken = Policy.objects.filter(organization=organization, team=team, api_key=api_key).exists()
        if taken:
            raise ValidationError(f"The {policy.target_label} already has a policy; update it instead.")
        policy.save(force_insert=True)
        audit_record(
            action="policy.create",
            actor=actor,
            target=policy,
            changes=audit_diff(before=None, after=_policy_snapshot(policy)),
            context=context,
        )
        _publish_after_commit(organization.pk)
    return policy


def api_key_create_with_policy(
    *,
    actor: Actor,
    organization: Organization,
    name: str,
    scopes: list[str],
    owner: User | None = None,
    team: Team | None = None,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    policy_fields: dict[str, Any] | None = None,
    context: AuditContext | None = None,
) -> IssuedKey:
    """Issue a key and, when `policy_fields` sets any limit (rate limits, budgets, ...: `POLICY_FIELDS`), the key's
    own policy, in one transaction with both audit events: a refused policy issues no key, so a key never exists
    without the limits it was asked for. Composed here because keys, which policies build on, cannot create
    policies."""
    limits = {name: value for name, value in (policy_fields or {}).items() if value is not None}
    with transaction.atomic():
        issued = api_key_create(
            organization=organization,
            name=name,
            scopes=scopes,
            actor=actor,
            owner=owner,
            team=team,
            expires_at=expires_at,
            allowed_models=allowed_models,
            context=context,
        )
        if limits:
            policy_create(actor=actor, organization=organization, api_key=issued.key, context=context, **limits)
    return issued


def policy_update(
    *, policy: Policy, actor: Actor, changes: dict[str, Any], context: AuditContext | None = None
) -> Policy:
    """Change a policy's limits, allow-list, profile or enabled flag; takes effect on every gateway within 1 s."""
    with transaction.atomic():
        policy, before = update_begin(policy, changes=changes, allowed=POLICY_FIELDS, snapshot=_policy_snapshot)
        _policy_validate(policy)
        policy.save()
        diff = audit_diff(before=before, after=_policy_snapshot(policy))
        if diff:
            audit_record(action="policy.update", actor=actor, target=policy, changes=diff, context=context)
            _publish_after_commit(policy.organization_id)
    return policy


def policy_delete(*, policy: Policy, actor: Actor, context: AuditContext | None = None) -> None:
    """Remove a policy: its level stops limiting anything (counters in Redis simply expire)."""
    with transaction.atomic():
        organization_id = policy.organization_id
        audit_record(
            action="policy.delete",
            actor=actor,
            target=policy,
            changes=audit_diff(before=_policy_snapshot(policy), after=None),
            context=context,
        )
        policy.delete()
        _publish_after_commit(organization_id)


def _profile_validate(profile: GuardrailProfile) -> None:
    for entry in profile.patterns:
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("pattern"):
            raise ValidationError({"patterns": 'Each pattern needs a "name" and a "pattern".'})
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", str(entry["name"])):
            raise ValidationError({"patterns": "Pattern names are 1 to 64 letters, digits, '_', '.' or '-'."})
    try:
        # Compiles it (bad actions, patterns, scanner classes) and refuses actions for unknown categories.
        guardrail_config_check(profile.config())
    except GuardrailConfigError as exc:
        raise ValidationError(str(exc)) from exc
    profile.full_clean(validate_unique=False, validate_constraints=False)


def guardrail_profile_create(
    *, actor: Actor, organization: Organization | None, context: AuditContext | None = None, **fields: Any
) -> GuardrailProfile:
    """A guardrail profile for an organisation (or the platform, `organization=None`, superadmins only: the
    caller checks). Compiled once here, so a profile that cannot compile is never saved."""
    allowed = PROFILE_FIELDS_PLATFORM if organization is None else PROFILE_FIELDS
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValidationError(f"Unknown profile fields: {', '.join(sorted(unknown))}")
    profile = GuardrailProfile(organization=organization, **fields)
    _profile_validate(profile)
    with transaction.atomic():
        profile.save(force_insert=True)
        audit_record(
            action="guardrail_profile.create",
            actor=actor,
            target=profile,
            changes=audit_diff(before=None, after=_profile_snapshot(profile)),
            context=context,
        )
        if profile.is_default:
            _publish_after_commit(None)
    return profile


def guardrail_profile_update(
    *, profile: GuardrailProfile, actor: Actor, changes: dict[str, Any], context: AuditContext | None = None
) -> GuardrailProfile:
    """Change a profile; every key whose policy uses it (or, for the default, every key) picks it up within 1 s."""
    allowed = PROFILE_FIELDS_PLATFORM if profile.organization_id is None else PROFILE_FIELDS
    with transaction.atomic():
        profile, before = update_begin(profile, changes=changes, allowed=allowed, snapshot=_profile_snapshot)
        _profile_validate(profile)
        profile.save()
        diff = audit_diff(before=before, after=_profile_snapshot(profile))
        if diff:
            audit_record(action="guardrail_profile.update", actor=actor, target=profile, changes=diff, context=context)
            # An organisation's profile can only be used by its own policies; a platform one by anyone's.
            _publish_after_commit(profile.organization_id)
    return profile


def guardrail_profile_delete(*, profile: GuardrailProfile, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a profile no policy uses; raises ValidationError naming how many policies still use it."""
    with transaction.atomic():
        in_use = profile.policies.count()
        if in_use:
            raise ValidationError(f"{in_use} {'policy uses' if in_use == 1 else 'policies use'} this profile.")
        organization_id = profile.organization_id
        audit_record(
            action="guardrail_profile.delete",
            actor=actor,
            target=profile,
            changes=audit_diff(before=_profile_snapshot(profile), after=None),
            context=context,
        )
        profile.delete()
        _publish_after_commit(organization_id)
