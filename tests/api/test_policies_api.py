"""The policy and guardrail profile REST API: CRUD through restrict() and the audited services, and every tenant
boundary an attacker could try (reading, changing, or attaching a policy to another organisation's team or key)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.keys.services import api_key_create
from apps.orgs.models import Team
from apps.policies.models import GuardrailProfile, Policy
from apps.policies.selectors import policy_effective_for
from tests.factories import MembershipFactory


def test_an_owner_attaches_policies_at_every_level(acme, owner, as_user):
    client = as_user(owner)
    org_level = client.post(
        "/api/policies/",
        {"organization": acme.org.pk, "requests_per_minute": 100, "allowed_models": ["acme-*"]},
        format="json",
    )
    assert org_level.status_code == 201, org_level.data
    assert (org_level.data["level"], org_level.data["team"], org_level.data["api_key"]) == ("org", None, None)
    key_level = client.post(
        "/api/policies/",
        {
            "organization": acme.org.pk,
            "api_key": acme.key.key.pk,
            "requests_per_minute": 10,
            "budget_per_day_micros": 5,
        },
        format="json",
    )
    assert key_level.status_code == 201, key_level.data
    assert key_level.data["level"] == "key"
    effective = policy_effective_for(key_id=acme.key.key.pk)
    assert effective.model_rules == (("acme-*",),)  # the organisation's allow-list reaches the key
    assert len(effective.levels) == 2  # organisation and key levels, checked together
    event = AuditEvent.objects.get(action="policy.create", target_id=str(key_level.data["id"]))
    assert event.changes["requests_per_minute"] == {"before": None, "after": 10}
    assert event.actor_user_id == owner.pk


def test_a_second_policy_for_the_same_target_is_a_400(acme, owner, as_user):
    body = {"organization": acme.org.pk, "team": acme.team.pk}  # tenancy gave the team a policy already
    response = as_user(owner).post("/api/policies/", body, format="json")
    assert response.status_code == 400
    assert "already has a policy" in str(response.data)


def test_team_and_key_at_once_is_a_400(acme, owner, as_user):
    team = Team.objects.create(organization=acme.org, name="Other", slug="other")
    body = {"organization": acme.org.pk, "team": team.pk, "api_key": acme.key.key.pk}
    assert as_user(owner).post("/api/policies/", body, format="json").status_code == 400


def test_updates_are_validated_audited_and_take_effect(acme, owner, as_user):
    client = as_user(owner)
    url = f"/api/policies/{acme.policy.pk}/"
    response = client.patch(url, {"requests_per_minute": 7, "allowed_models": ["a*"]}, format="json")
    assert response.status_code == 200, response.data
    assert response.data["requests_per_minute"] == 7
    event = AuditEvent.objects.filter(action="policy.update", target_id=str(acme.policy.pk)).get()
    assert event.changes["requests_per_minute"] == {"before": 600, "after": 7}
    assert client.patch(url, {"requests_per_minute": -1}, format="json").status_code == 400
    assert client.patch(url, {"allowed_models": [""]}, format="json").status_code == 400
    assert Policy.objects.get(pk=acme.policy.pk).requests_per_minute == 7


def test_deleting_a_policy_is_audited(acme, owner, as_user):
    policy_id = acme.policy.pk
    assert as_user(owner).delete(f"/api/policies/{policy_id}/").status_code == 204
    assert not Policy.objects.filter(pk=policy_id).exists()
    assert AuditEvent.objects.filter(action="policy.delete", target_id=str(policy_id)).exists()


def test_a_viewer_reads_policies_but_cannot_change_them(acme, viewer, as_user):
    client = as_user(viewer)
    assert client.get(f"/api/policies/{acme.policy.pk}/").status_code == 200
    assert client.patch(f"/api/policies/{acme.policy.pk}/", {"enabled": False}, format="json").status_code == 403
    assert client.delete(f"/api/policies/{acme.policy.pk}/").status_code == 403
    assert client.post("/api/policies/", {"organization": acme.org.pk}, format="json").status_code == 403
    assert Policy.objects.get(pk=acme.policy.pk).enabled


# --- crossing tenants --------------------------------------------------------------------------------------------


def _attackers(globex, outsider, as_user, as_key):
    key = api_key_create(organization=globex.org, name="atk", scopes=["read", "manage"])
    return {"person": as_user(outsider), "service key": as_key(key.secret)}


def test_an_outsider_cannot_read_change_or_delete_anothers_policy(acme, globex, outsider, as_user, as_key):
    for who, client in _attackers(globex, outsider, as_user, as_key).items():
        url = f"/api/policies/{acme.policy.pk}/"
        assert client.get(url).status_code == 404, who
        assert client.patch(url, {"requests_per_minute": 1}, format="json").status_code == 404, who
        assert client.delete(url).status_code == 404, who
        listed = client.get("/api/policies/").data["results"]
        assert [row["organization"] for row in listed] == [globex.org.pk], who
    assert Policy.objects.get(pk=acme.policy.pk).requests_per_minute == 600


@pytest.mark.parametrize("target", ["api_key", "team", "guardrail_profile"])
def test_an_outsider_cannot_attach_a_policy_to_anothers_key_team_or_profile(
    target, acme, globex, outsider, as_user, as_key
):
    foreign = {"api_key": acme.key.key.pk, "team": acme.team.pk, "guardrail_profile": acme.guardrail_profile.pk}
    before = Policy.objects.count()
    for who, client in _attackers(globex, outsider, as_user, as_key).items():
        # In their own organisation, pointing at the other organisation's row: it reads as "does not exist".
        own_org = client.post("/api/policies/", {"organization": globex.org.pk, target: foreign[target]}, format="json")
        assert own_org.status_code == 400, who
        assert target in own_org.data, who
        assert "acme" not in str(own_org.data).lower()
        # In the other organisation: that organisation reads as "does not exist".
        other = client.post("/api/policies/", {"organization": acme.org.pk, target: foreign[target]}, format="json")
        assert other.status_code == 400, who
        assert "organization" in other.data, who
    assert Policy.objects.count() == before


def test_a_member_of_two_organisations_cannot_mix_them(acme, globex, owner, roles, as_user):
    """Someone who may see both organisations' keys still cannot attach one organisation's policy to the other's."""
    MembershipFactory(user=owner, organization=globex.org, role=roles["owner"])
    client = as_user(owner)
    for target, row in [("api_key", globex.key.key.pk), ("team", globex.team.pk)]:
        response = client.post("/api/policies/", {"organization": acme.org.pk, target: row}, format="json")
        assert response.status_code == 400
        assert target in response.data
        assert "another organisation" in str(response.data[target])
    profile = client.post(
        "/api/policies/",
        {"organization": acme.org.pk, "api_key": acme.key.key.pk, "guardrail_profile": globex.guardrail_profile.pk},
        format="json",
    )
    assert profile.status_code == 400
    assert "guardrail_profile" in profile.data
    assert not Policy.objects.filter(api_key=acme.key.key).exists()


# --- guardrail profiles ------------------------------------------------------------------------------------------


def test_an_owner_manages_their_guardrail_profiles(acme, owner, as_user):
    client = as_user(owner)
    created = client.post(
        "/api/guardrail-profiles/",
        {"organization": acme.org.pk, "name": "strict", "input_actions": {"email": "block", "card": "redact"}},
        format="json",
    )
    assert created.status_code == 201, created.data
    url = f"/api/guardrail-profiles/{created.data['id']}/"
    changed = client.patch(url, {"blocklist": ["project x"]}, format="json")
    assert changed.status_code == 200
    assert changed.data["blocklist"] == ["project x"]
    assert AuditEvent.objects.filter(action="guardrail_profile.update", target_id=str(created.data["id"])).exists()
    bad = client.patch(url, {"patterns": [{"name": "x", "pattern": "(unclosed"}]}, format="json")
    assert bad.status_code == 400
    assert client.delete(url).status_code == 204


def test_a_profile_in_use_cannot_be_deleted(acme, owner, as_user):
    response = as_user(owner).delete(f"/api/guardrail-profiles/{acme.guardrail_profile.pk}/")
    assert response.status_code == 400
    assert "uses this profile" in str(response.data)
    assert GuardrailProfile.objects.filter(pk=acme.guardrail_profile.pk).exists()


def test_only_the_superadmin_makes_platform_profiles_and_members_can_use_them(acme, owner, as_user, django_user_model):
    refused = as_user(owner).post(
        "/api/guardrail-profiles/", {"organization": None, "name": "platform", "is_default": True}, format="json"
    )
    assert refused.status_code == 403
    assert (
        as_user(owner)
        .post("/api/guardrail-profiles/", {"organization": acme.org.pk, "name": "d", "is_default": True}, format="json")
        .status_code
        == 400
    )
    root = django_user_model.objects.create_superuser("root@platform.test", "correct horse battery")
    made = as_user(root).post(
        "/api/guardrail-profiles/", {"organization": None, "name": "platform", "is_default": True}, format="json"
    )
    assert made.status_code == 201, made.data
    assert made.data["id"] in [row["id"] for row in as_user(owner).get("/api/guardrail-profiles/").data["results"]]
    attached = as_user(owner).patch(
        f"/api/policies/{acme.policy.pk}/", {"guardrail_profile": made.data["id"]}, format="json"
    )
    assert attached.status_code == 200, attached.data
    assert (
        as_user(owner).patch(f"/api/guardrail-profiles/{made.data['id']}/", {"name": "x"}, format="json").status_code
        == 403
    )


def test_an_outsider_cannot_read_or_change_anothers_profile(acme, globex, outsider, as_user, as_key):
    for who, client in _attackers(globex, outsider, as_user, as_key).items():
        url = f"/api/guardrail-profiles/{acme.guardrail_profile.pk}/"
        assert client.get(url).status_code == 404, who
        assert client.patch(url, {"blocklist": ["x"]}, format="json").status_code == 404, who
        assert client.delete(url).status_code == 404, who
        assert acme.guardrail_profile.pk not in [
            row["id"] for row in client.get("/api/guardrail-profiles/").data["results"]
        ]
    assert GuardrailProfile.objects.get(pk=acme.guardrail_profile.pk).blocklist == []


# --- query counts ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "pinned"), [("/api/policies/", 4), ("/api/guardrail-profiles/", 4)])
def test_list_endpoints_have_a_fixed_query_count(url, pinned, acme, owner, as_user, django_assert_num_queries):
    client = as_user(owner)
    client.get(url)  # warm the content-type cache, as any running process has
    with CaptureQueriesContext(connection) as first:
        assert client.get(url).status_code == 200
    expected = len(first)
    for i in range(4):
        team = Team.objects.create(organization=acme.org, name=f"t{i}", slug=f"t{i}")
        profile = GuardrailProfile.objects.create(organization=acme.org, name=f"p{i}")
        Policy.objects.create(organization=acme.org, team=team, guardrail_profile=profile)
    with django_assert_num_queries(expected):
        assert client.get(url).data["count"] == 5
    assert expected == pinned


def test_knowledge_quotas_are_set_read_and_validated_through_the_api(acme, owner, as_user):
    client = as_user(owner)
    url = f"/api/policies/{acme.policy.pk}/"
    response = client.patch(url, {"knowledge_bytes_max": 5_000_000, "knowledge_chunks_max": 2_000}, format="json")
    assert response.status_code == 200, response.data
    assert (response.data["knowledge_bytes_max"], response.data["knowledge_chunks_max"]) == (5_000_000, 2_000)
    event = AuditEvent.objects.get(action="policy.update", target_id=str(acme.policy.pk))
    assert event.changes["knowledge_chunks_max"] == {"before": None, "after": 2_000}
    assert client.patch(url, {"knowledge_bytes_max": -1}, format="json").status_code == 400
    assert client.patch(url, {"knowledge_chunks_max": 2**63}, format="json").status_code == 400
    assert client.get(url).data["knowledge_bytes_max"] == 5_000_000


def test_the_flagged_chunks_switch_is_read_and_written_through_the_api(acme, owner, as_user):
    client = as_user(owner)
    url = f"/api/policies/{acme.policy.pk}/"
    assert client.get(url).data["knowledge_flagged_chunks"] == "exclude"
    response = client.patch(url, {"knowledge_flagged_chunks": "allow"}, format="json")
    assert response.status_code == 200, response.data
    assert Policy.objects.get(pk=acme.policy.pk).knowledge_flagged_chunks == "allow"
    assert client.patch(url, {"knowledge_flagged_chunks": "always"}, format="json").status_code == 400
    assert Policy.objects.get(pk=acme.policy.pk).knowledge_flagged_chunks == "allow"


def test_storing_responses_is_an_organisation_policy_switch_read_written_and_audited(acme, owner, as_user):
    client = as_user(owner)
    team_url = f"/api/policies/{acme.policy.pk}/"
    assert client.get(team_url).data["responses_store"] is False
    refused = client.patch(team_url, {"responses_store": True}, format="json")
    assert refused.status_code == 400
    assert "responses_store" in refused.data
    assert policy_effective_for(key_id=acme.key.key.pk).responses_store is False

    created = client.post("/api/policies/", {"organization": acme.org.pk, "responses_store": True}, format="json")
    assert created.status_code == 201, created.data
    assert policy_effective_for(key_id=acme.key.key.pk).responses_store is True
    url = f"/api/policies/{created.data['id']}/"
    assert client.patch(url, {"responses_store": "sometimes"}, format="json").status_code == 400
    assert client.patch(url, {"responses_store": False}, format="json").status_code == 200
    assert policy_effective_for(key_id=acme.key.key.pk).responses_store is False
    event = AuditEvent.objects.get(action="policy.update", target_id=str(created.data["id"]))
    assert event.changes["responses_store"] == {"before": True, "after": False}
