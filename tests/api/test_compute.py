"""Providers, pools and deployments through the REST API: ownership checks, delegation to a team, sharing."""

from __future__ import annotations

from apps.audit.models import AuditEvent
from apps.orgs.models import Membership, User
from tests.tenancy import platform_deployment


def test_an_owner_builds_provider_pool_and_deployment(acme, owner, as_user):
    client = as_user(owner)
    provider = client.post(
        "/api/providers/", {"organization": acme.org.pk, "name": "sim", "kind": "simulator"}, format="json"
    ).data
    pool = client.post(
        "/api/pools/", {"organization": acme.org.pk, "provider": provider["id"], "name": "p"}, format="json"
    ).data
    created = client.post(
        "/api/deployments/",
        {"organization": acme.org.pk, "pool": pool["id"], "name": "d", "model_id": "m", "served_model_name": "chat"},
        format="json",
    )
    assert created.status_code == 201, created.data
    assert created.data["state"] == "pending"
    scaled = client.patch(f"/api/deployments/{created.data['id']}/", {"desired_replicas": 0}, format="json")
    assert scaled.status_code == 200
    event = AuditEvent.objects.get(action="deployment.update")
    assert event.changes == {"desired_replicas": {"before": 1, "after": 0}}


def test_a_deployment_cannot_use_a_pool_of_another_organisation(acme, globex, owner, as_user):
    response = as_user(owner).post(
        "/api/deployments/",
        {"organization": acme.org.pk, "pool": globex.pool.pk, "name": "d", "model_id": "m", "served_model_name": "x"},
        format="json",
    )
    assert response.status_code == 400
    assert "pool" in response.data


def test_a_pool_in_use_cannot_be_deleted(acme, owner, as_user):
    response = as_user(owner).delete(f"/api/pools/{acme.pool.pk}/")
    assert response.status_code == 400


def test_delegating_a_deployment_to_a_team_lets_its_members_change_that_one(acme, owner, member, as_user):
    Membership.objects.get(user=member).teams.add(acme.team)
    url = f"/api/deployments/{acme.deployment.pk}/"
    assert as_user(member).patch(url, {"desired_replicas": 2}, format="json").status_code == 403
    granted = as_user(owner).post(f"{url}grant/", {"actions": ["change"], "team": acme.team.pk}, format="json")
    assert granted.status_code == 204
    assert as_user(member).patch(url, {"max_replicas": 2, "desired_replicas": 2}, format="json").status_code == 200
    assert as_user(member).delete(url).status_code == 403
    regrant = as_user(member).post(f"{url}grant/", {"actions": ["delete"], "team": acme.team.pk}, format="json")
    assert regrant.status_code == 403


def test_a_member_cannot_grant_themselves_more(acme, member, as_user):
    url = f"/api/deployments/{acme.deployment.pk}/grant/"
    response = as_user(member).post(url, {"actions": ["change"], "user": member.email}, format="json")
    assert response.status_code == 403


def test_a_grant_to_a_foreign_team_is_refused(acme, globex, owner, as_user):
    url = f"/api/deployments/{acme.deployment.pk}/grant/"
    response = as_user(owner).post(url, {"actions": ["change"], "team": globex.team.pk}, format="json")
    assert response.status_code == 400


def test_a_shared_platform_deployment_is_read_only_to_the_organisation(acme, owner, as_user):
    shared = platform_deployment(shared_with=[acme.org])
    client = as_user(owner)
    assert client.get(f"/api/deployments/{shared.pk}/").status_code == 200
    assert client.patch(f"/api/deployments/{shared.pk}/", {"desired_replicas": 3}, format="json").status_code == 403
    assert client.post(f"/api/deployments/{shared.pk}/share/", {"organizations": []}, format="json").status_code == 403
    root = User.objects.create_superuser("root@inferia.test", "correct horse battery")
    unshared = as_user(root).post(f"/api/deployments/{shared.pk}/share/", {"organizations": []}, format="json")
    assert unshared.status_code == 200
    assert client.get(f"/api/deployments/{shared.pk}/").status_code == 404
