"""The policies pages: policies at every level and guardrail profiles, created and edited through the audited
services; a viewer's forged POSTs are refused, another organisation's rows are 404, and lists run a fixed number
of queries."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.orgs.models import Team
from apps.policies.models import GuardrailProfile, Policy

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/console/policies/", "/console/policies/profiles/"])
def test_lists_run_a_fixed_number_of_queries(
    url, acme, owner, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    client.get(url)
    with django_assert_max_num_queries(15) as few:
        assert client.get(url).status_code == 200
    for n in range(6):
        team = Team.objects.create(organization=acme.org, name=f"t{n}", slug=f"t{n}")
        profile = GuardrailProfile.objects.create(organization=acme.org, name=f"p{n}")
        Policy.objects.create(organization=acme.org, team=team, guardrail_profile=profile, tokens_per_day=n)
        key = api_key_create(organization=acme.org, name=f"k{n}", scopes=["inference"], actor=owner).key
        Policy.objects.create(organization=acme.org, api_key=key, requests_per_minute=n)
    with django_assert_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200


def test_the_list_shows_own_policies_only(acme, globex, owner, signed_in):
    html = signed_in(owner).get("/console/policies/").content.decode()
    assert "acme team" in html
    assert "globex team" not in html
    assert 'data-testid="policy-create"' in html


def test_an_owner_creates_and_edits_a_key_policy(acme, owner, signed_in):
    client = signed_in(owner)
    key = acme.service_key.key
    response = client.post(
        "/console/policies/new/",
        {
            "organization": acme.org.pk,
            "level": "key",
            "key": key.prefix,
            "requests_per_minute": "30",
            "allowed_models": "acme-model, llama-*",
            "enabled": "on",
        },
    )
    policy = Policy.objects.get(api_key=key)
    assert response["Location"] == f"/console/policies/{policy.pk}/"
    assert policy.requests_per_minute == 30
    assert policy.allowed_models == ["acme-model", "llama-*"]
    client.post(
        f"/console/policies/{policy.pk}/",
        {"requests_per_minute": "10", "enabled": "on", "guardrail_profile": acme.guardrail_profile.pk},
    )
    policy.refresh_from_db()
    assert policy.requests_per_minute == 10
    assert policy.guardrail_profile == acme.guardrail_profile
    assert policy.allowed_models == []
    assert AuditEvent.objects.filter(action="policy.update", target_id=str(policy.pk)).exists()


def test_a_foreign_profile_cannot_be_attached(acme, globex, owner, signed_in):
    signed_in(owner).post(
        f"/console/policies/{acme.policy.pk}/", {"enabled": "on", "guardrail_profile": globex.guardrail_profile.pk}
    )
    acme.policy.refresh_from_db()
    assert acme.policy.guardrail_profile is None


def test_profiles_are_created_and_edited_by_category(acme, owner, signed_in):
    client = signed_in(owner)
    response = client.post(
        "/console/policies/profiles/new/",
        {
            "organization": acme.org.pk,
            "name": "strict",
            "input_email": "redact",
            "output_card": "stop",
            "blocklist": "forbidden\nsecret plan",
            "patterns": "[]",
            "scanners": "[]",
        },
    )
    profile = GuardrailProfile.objects.get(organization=acme.org, name="strict")
    assert response["Location"] == f"/console/policies/profiles/{profile.pk}/"
    assert profile.blocklist == ["forbidden", "secret plan"]
    assert profile.input_actions == {"email": "redact"}
    assert profile.output_actions == {"card": "stop"}
    bad = client.post(f"/console/policies/profiles/{profile.pk}/", {"name": "strict", "patterns": "[nope"})
    assert bad.status_code == 200
    assert b"Not valid JSON" in bad.content
    client.post(f"/console/policies/profiles/{profile.pk}/", {"name": "strict", "input_email": "block"})
    profile.refresh_from_db()
    assert profile.input_actions == {"email": "block"}
    assert profile.output_actions == {}
    assert AuditEvent.objects.filter(action="guardrail_profile.update", target_id=str(profile.pk)).exists()


def test_a_viewer_sees_no_buttons_and_forged_posts_are_refused(acme, viewer, signed_in):
    client = signed_in(viewer)
    listing = client.get("/console/policies/").content.decode()
    assert 'data-testid="policy-create"' not in listing
    detail = client.get(f"/console/policies/{acme.policy.pk}/").content.decode()
    assert 'data-testid="policy-save"' not in detail
    assert 'data-testid="policy-delete"' not in detail
    profile = client.get(f"/console/policies/profiles/{acme.guardrail_profile.pk}/").content.decode()
    assert 'data-testid="profile-save"' not in profile
    assert 'data-testid="profile-new"' not in client.get("/console/policies/profiles/").content.decode()
    assert client.post(f"/console/policies/{acme.policy.pk}/", {"requests_per_minute": "1"}).status_code == 403
    assert client.post(f"/console/policies/{acme.policy.pk}/delete/").status_code == 403
    assert client.post(f"/console/policies/profiles/{acme.guardrail_profile.pk}/", {"name": "x"}).status_code == 403
    assert client.post("/console/policies/new/", {"organization": acme.org.pk, "level": "org"}).status_code == 403
    assert client.post("/console/policies/profiles/new/", {"organization": acme.org.pk, "name": "x"}).status_code == 403
    acme.policy.refresh_from_db()
    assert acme.policy.requests_per_minute == 600


def test_another_organisations_policies_are_not_found(acme, globex, owner, signed_in):
    client = signed_in(owner)
    assert client.get(f"/console/policies/{globex.policy.pk}/").status_code == 404
    assert client.post(f"/console/policies/{globex.policy.pk}/", {"requests_per_minute": "1"}).status_code == 404
    assert client.post(f"/console/policies/{globex.policy.pk}/delete/").status_code == 404
    assert client.get(f"/console/policies/profiles/{globex.guardrail_profile.pk}/").status_code == 404
    key_policy = client.post(
        "/console/policies/new/", {"organization": acme.org.pk, "level": "key", "key": globex.key.key.prefix}
    )
    assert key_policy.status_code == 302
    assert not Policy.objects.filter(api_key=globex.key.key).exists()


def test_a_nul_escaped_in_a_json_box_is_a_form_error_not_a_500(acme, owner, signed_in):
    response = signed_in(owner).post(
        "/console/policies/profiles/new/",
        {"organization": acme.org.pk, "name": "nul", "patterns": '[{"name": "a", "pattern": "bl\\u0000ock"}]'},
    )
    assert response.status_code == 200
    assert b"control characters" in response.content
    assert not GuardrailProfile.objects.filter(name="nul").exists()


def test_a_new_policys_message_names_what_it_applies_to(signed_in, owner, acme):
    """ "Policy of the team Support created", not "of the team #2": people know their teams by name."""
    client = signed_in(owner)
    acme.policy.delete()
    response = client.post(
        "/console/policies/new/",
        {"organization": acme.org.pk, "level": "team", "team": acme.team.pk},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert f"Policy of the team {acme.team.name} created." in messages


def test_an_owner_sets_knowledge_quotas_on_the_policy_form(acme, owner, signed_in):
    client = signed_in(owner)
    url = f"/console/policies/{acme.policy.pk}/"
    assert 'name="knowledge_bytes_max"' in client.get(url).content.decode()
    client.post(url, {"enabled": "on", "knowledge_bytes_max": "1048576", "knowledge_chunks_max": "500"})
    acme.policy.refresh_from_db()
    assert (acme.policy.knowledge_bytes_max, acme.policy.knowledge_chunks_max) == (1_048_576, 500)
    assert "1.0\xa0MB of files" in client.get("/console/policies/").content.decode()
    assert AuditEvent.objects.filter(action="policy.update", target_id=str(acme.policy.pk)).exists()


def test_an_owner_lets_flagged_chunks_into_prompts_on_the_policy_form(acme, owner, signed_in):
    client = signed_in(owner)
    url = f"/console/policies/{acme.policy.pk}/"
    assert 'name="knowledge_flagged_chunks"' in client.get(url).content.decode()
    client.post(url, {"enabled": "on", "knowledge_flagged_chunks": "allow"})
    acme.policy.refresh_from_db()
    assert acme.policy.knowledge_flagged_chunks == "allow"
    assert "flagged chunks allowed" in client.get("/console/policies/").content.decode()
    client.post(url, {"enabled": "on"})  # a form that leaves it out keeps the safe default
    acme.policy.refresh_from_db()
    assert acme.policy.knowledge_flagged_chunks == "exclude"


def test_a_teams_gpu_quota_is_set_on_its_policy_page(acme, owner, signed_in):
    policy = Policy.objects.get(team__organization=acme.org, team__isnull=False, api_key__isnull=True)
    client = signed_in(owner)

    page = client.get(f"/console/policies/{policy.pk}/").content.decode()
    client.post(f"/console/policies/{policy.pk}/", {"gpus_max": "8", "enabled": "on"})

    assert "GPUs at once" in page
    policy.refresh_from_db()
    assert policy.gpus_max == 8
    assert AuditEvent.objects.filter(action="policy.update", target_id=str(policy.pk)).exists()


def test_an_owner_switches_storing_responses_on_the_organisations_policy_only(acme, owner, signed_in):
    from apps.policies.services import policy_create

    org_policy = policy_create(actor=owner, organization=acme.org)
    client = signed_in(owner)
    url = f"/console/policies/{org_policy.pk}/"
    assert 'name="responses_store"' in client.get(url).content.decode()
    assert 'name="responses_store"' not in client.get(f"/console/policies/{acme.policy.pk}/").content.decode()
    client.post(url, {"enabled": "on", "responses_store": "on"})
    org_policy.refresh_from_db()
    assert org_policy.responses_store is True
    event = AuditEvent.objects.filter(action="policy.update", target_id=str(org_policy.pk)).latest("pk")
    assert event.changes["responses_store"] == {"before": False, "after": True}
    client.post(f"/console/policies/{acme.policy.pk}/", {"enabled": "on", "responses_store": "on"})  # a team's
    acme.policy.refresh_from_db()
    assert acme.policy.responses_store is False
