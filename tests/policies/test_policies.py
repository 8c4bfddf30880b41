"""Policies: attaching them, resolving a key's effective policy across levels, auditing changes and invalidating
every gateway's cache."""

from __future__ import annotations

import asyncio

import pytest
from django.core.exceptions import ValidationError

from apps.audit.models import AuditEvent
from apps.policies.errors import PolicyDenied
from apps.policies.selectors import GpuQuotas, gpu_quotas_for, policy_effective_for
from apps.policies.services import (
    guardrail_profile_create,
    guardrail_profile_update,
    policy_create,
    policy_delete,
    policy_update,
)
from tests.kit.waiting import eventually_async

pytestmark = pytest.mark.django_db


def test_limits_of_every_level_apply_and_only_tighten(org, team, team_key, owner):
    policy_create(actor=owner, organization=org, requests_per_minute=100, max_tokens_per_request=4096)
    policy_create(actor=owner, organization=org, team=team, requests_per_minute=500, max_tokens_per_request=1024)
    policy_create(actor=owner, organization=org, api_key=team_key, tokens_per_day=10_000)

    effective = policy_effective_for(key_id=team_key.pk)

    assert [level.requests_per_minute for level in effective.levels] == [100, 500, None]
    assert effective.levels[2].tokens_per_day == 10_000
    assert effective.max_tokens_per_request == 1024
    assert effective.max_tokens_resolve(None) == 1024
    with pytest.raises(PolicyDenied) as denied:
        effective.max_tokens_resolve(2000)
    assert denied.value.code == "max_tokens_exceeded"


def test_allowed_models_intersect_across_levels_and_the_key(org, team, owner):
    from apps.keys.services import api_key_create

    key = api_key_create(
        organization=org, team=team, name="k", scopes=["inference"], allowed_models=["llama-3-8b", "mistral-7b"]
    ).key
    policy_create(actor=owner, organization=org, allowed_models=["llama-*", "mistral-*"])
    policy_create(actor=owner, organization=org, team=team, allowed_models=["llama-3-*", "mistral-7b"])

    effective = policy_effective_for(key_id=key.pk)

    assert effective.model_allowed("llama-3-8b")
    assert effective.model_allowed("mistral-7b")
    assert not effective.model_allowed("llama-3-70b")  # the key's own list
    assert not effective.model_allowed("gpt-4")
    with pytest.raises(PolicyDenied) as denied:
        effective.model_check("gpt-4")
    assert (denied.value.status, denied.value.code) == (403, "model_not_allowed")


def test_a_disabled_policy_is_ignored(org, org_key, owner):
    policy = policy_create(actor=owner, organization=org, requests_per_minute=1, allowed_models=["x"])

    policy_update(policy=policy, actor=owner, changes={"enabled": False})

    effective = policy_effective_for(key_id=org_key.pk)
    assert effective.levels == ()
    assert effective.model_allowed("anything")


def test_guardrail_profiles_merge_to_the_strongest_action(org, team, team_key, owner):
    strict = guardrail_profile_create(actor=owner, organization=org, name="strict", input_actions={"email": "block"})
    loose = guardrail_profile_create(
        actor=owner, organization=org, name="loose", input_actions={"email": "off", "card": "redact"}
    )
    policy_create(actor=owner, organization=org, guardrail_profile=strict)
    policy_create(actor=owner, organization=org, team=team, guardrail_profile=loose)

    guardrails = policy_effective_for(key_id=team_key.pk).guardrails

    assert guardrails.action_for("email") == "block"  # a team cannot switch off what its organisation turned on
    assert guardrails.action_for("card") == "redact"


def test_without_profiles_the_default_profile_applies(org, org_key):
    guardrails = policy_effective_for(key_id=org_key.pk).guardrails

    assert guardrails.action_for("secret") == "redact"
    assert guardrails.output_enabled is False


def test_every_change_is_audited(org, org_key, owner):
    policy = policy_create(actor=owner, organization=org, requests_per_minute=10)
    policy_update(policy=policy, actor=owner, changes={"requests_per_minute": 20})
    policy_delete(policy=policy, actor=owner)

    events = list(AuditEvent.objects.filter(action__startswith="policy.").order_by("seq"))

    assert [event.action for event in events] == ["policy.create", "policy.update", "policy.delete"]
    assert events[1].changes == {"requests_per_minute": {"before": 10, "after": 20}}
    assert all(event.actor_user_id == owner.pk and event.organization_id == org.pk for event in events)


def test_it_refuses_a_second_policy_for_the_same_target_and_foreign_objects(org, other_org, owner):
    from apps.orgs.models import Team

    policy_create(actor=owner, organization=org)
    foreign_team = Team.objects.create(organization=other_org, name="Other", slug="other")

    with pytest.raises(ValidationError):
        policy_create(actor=owner, organization=org)
    with pytest.raises(ValidationError):
        policy_create(actor=owner, organization=org, team=foreign_team)


def test_a_profile_that_cannot_compile_is_not_saved(org, owner):
    with pytest.raises(ValidationError):
        guardrail_profile_create(
            actor=owner, organization=org, name="bad", patterns=[{"name": "x", "pattern": "(unclosed"}]
        )


@pytest.mark.django_db(transaction=True)
async def test_a_change_reaches_a_listening_cache_within_a_second(org, org_key, owner, redis_cache, aredis):
    from channels.db import database_sync_to_async

    from apps.policies.cache import PolicyCache

    policy = await database_sync_to_async(policy_create)(actor=owner, organization=org, requests_per_minute=10)
    cache = PolicyCache()
    ready = asyncio.Event()
    listener = asyncio.create_task(cache.listen(aredis, ready))
    await asyncio.wait_for(ready.wait(), 5)
    before = await cache.get(org_key.pk)
    assert (await cache.get(org_key.pk)) is before  # served from memory
    reads = cache.database_reads

    await database_sync_to_async(policy_update)(policy=policy, actor=owner, changes={"requests_per_minute": 99})

    async def updated():
        after = await cache.get(org_key.pk)
        return after if after.levels[0].requests_per_minute == 99 else None

    after = await eventually_async(updated, timeout=1.0, interval=0.01, what="the new limit in the cache")

    listener.cancel()
    assert before.levels[0].requests_per_minute == 10
    assert after.levels[0].requests_per_minute == 99
    assert cache.database_reads == reads + 1


@pytest.mark.django_db(transaction=True)
async def test_a_profile_change_invalidates_its_organisation(org, org_key, owner, redis_cache, aredis):
    from channels.db import database_sync_to_async

    from apps.policies.cache import PolicyCache

    profile = await database_sync_to_async(guardrail_profile_create)(
        actor=owner, organization=org, name="p", input_actions={"email": "flag"}
    )
    await database_sync_to_async(policy_create)(actor=owner, organization=org, guardrail_profile=profile)
    cache = PolicyCache()
    ready = asyncio.Event()
    listener = asyncio.create_task(cache.listen(aredis, ready))
    await asyncio.wait_for(ready.wait(), 5)
    assert (await cache.get(org_key.pk)).guardrails.action_for("email") == "flag"

    await database_sync_to_async(guardrail_profile_update)(
        profile=profile, actor=owner, changes={"input_actions": {"email": "block"}}
    )

    async def blocks() -> bool:
        return (await cache.get(org_key.pk)).guardrails.action_for("email") == "block"

    await eventually_async(blocks, timeout=1.0, interval=0.01, what="the new action in the cache")

    listener.cancel()
    assert (await cache.get(org_key.pk)).guardrails.action_for("email") == "block"


def test_flagged_chunks_stay_out_of_prompts_unless_every_level_allows_them(org, team, team_key, owner):
    assert policy_effective_for(key_id=team_key.pk).knowledge_flagged_allowed is False  # no policy at all
    org_policy = policy_create(actor=owner, organization=org)
    team_policy = policy_create(actor=owner, organization=org, team=team, knowledge_flagged_chunks="allow")
    policy_create(actor=owner, organization=org, api_key=team_key, knowledge_flagged_chunks="allow")
    assert policy_effective_for(key_id=team_key.pk).knowledge_flagged_allowed is False  # the org's default: exclude
    policy_update(policy=org_policy, actor=owner, changes={"knowledge_flagged_chunks": "allow"})
    assert policy_effective_for(key_id=team_key.pk).knowledge_flagged_allowed is True
    policy_update(policy=team_policy, actor=owner, changes={"knowledge_flagged_chunks": "exclude"})
    assert policy_effective_for(key_id=team_key.pk).knowledge_flagged_allowed is False
    policy_update(policy=team_policy, actor=owner, changes={"enabled": False})  # a disabled level has no say
    assert policy_effective_for(key_id=team_key.pk).knowledge_flagged_allowed is True
    event = AuditEvent.objects.filter(action="policy.update", target_id=str(org_policy.pk)).order_by("id").first()
    assert event.changes["knowledge_flagged_chunks"] == {"before": "exclude", "after": "allow"}
    with pytest.raises(ValidationError):
        policy_update(policy=org_policy, actor=owner, changes={"knowledge_flagged_chunks": "sometimes"})


def test_gpu_quotas_belong_to_organisations_and_teams_not_keys(org, team, team_key, owner):
    policy_create(actor=owner, organization=org, gpus_max=16)
    policy_create(actor=owner, organization=org, team=team, gpus_max=4, enabled=False)

    with pytest.raises(ValidationError, match="GPU quotas apply to an organisation or a team"):
        policy_create(actor=owner, organization=org, api_key=team_key, gpus_max=2)

    assert gpu_quotas_for(organization_id=org.pk, team_id=team.pk) == GpuQuotas(organization=16, team=None)
    assert gpu_quotas_for(organization_id=org.pk, team_id=None) == GpuQuotas(organization=16, team=None)
