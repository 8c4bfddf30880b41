"""Guardrail profiles name only categories something reports: a typo (`emal`) is refused by the service, and so by
the REST API and every other caller, with a message that says what is wrong."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.policies import services as policy_services
from apps.policies.guardrails import BUILTIN_CATEGORIES, CATEGORY_DESCRIPTIONS, guardrail_categories
from apps.policies.models import GuardrailProfile


def test_every_builtin_category_is_listed_with_a_description():
    listed = dict(guardrail_categories())
    assert set(BUILTIN_CATEGORIES) <= set(listed)
    assert all(listed[category] == CATEGORY_DESCRIPTIONS[category] for category in BUILTIN_CATEGORIES)


def test_the_service_refuses_an_unknown_category_and_suggests_the_right_one(acme, owner):
    with pytest.raises(ValidationError, match=r"unknown input category 'emal' \(did you mean 'email'\?\)"):
        policy_services.guardrail_profile_create(
            actor=owner, organization=acme.org, name="typo", input_actions={"emal": "block"}
        )
    with pytest.raises(ValidationError, match="unknown output category 'cards'"):
        policy_services.guardrail_profile_update(
            profile=acme.guardrail_profile, actor=owner, changes={"output_actions": {"cards": "stop"}}
        )
    assert not GuardrailProfile.objects.filter(name="typo").exists()


def test_a_custom_patterns_category_is_known_only_with_its_pattern(acme, owner):
    pattern = {"name": "ticket", "pattern": r"TCK-\d+"}
    profile = policy_services.guardrail_profile_create(
        actor=owner,
        organization=acme.org,
        name="tickets",
        input_actions={"custom:ticket": "redact"},
        patterns=[pattern],
    )
    assert profile.input_actions == {"custom:ticket": "redact"}
    with pytest.raises(ValidationError, match="unknown input category 'custom:ticket'"):
        policy_services.guardrail_profile_update(profile=profile, actor=owner, changes={"patterns": []})


def test_the_api_answers_400_for_a_typo_in_a_category(acme, owner, as_user):
    client = as_user(owner)
    created = client.post(
        "/api/guardrail-profiles/",
        {"organization": acme.org.pk, "name": "typo", "input_actions": {"emal": "block"}},
        format="json",
    )
    assert created.status_code == 400
    assert "unknown input category 'emal'" in str(created.data)
    assert not GuardrailProfile.objects.filter(name="typo").exists()
    changed = client.patch(
        f"/api/guardrail-profiles/{acme.guardrail_profile.pk}/", {"input_actions": {"phnoe": "flag"}}, format="json"
    )
    assert changed.status_code == 400
    assert "did you mean 'phone'" in str(changed.data)


def test_the_api_sets_a_bounded_toxicity_threshold(acme, owner, as_user):
    client = as_user(owner)
    body = {"organization": acme.org.pk, "name": "tone", "input_actions": {"toxicity": "block"}}
    refused = client.post("/api/guardrail-profiles/", {**body, "toxicity_threshold": 1.2}, format="json")
    assert refused.status_code == 400
    assert "toxicity_threshold" in refused.data
    created = client.post("/api/guardrail-profiles/", {**body, "toxicity_threshold": 0.7}, format="json")
    assert created.status_code == 201, created.data
    assert created.data["toxicity_threshold"] == 0.7
    assert GuardrailProfile.objects.get(pk=created.data["id"]).config()["toxicity_threshold"] == 0.7
