"""The API keys pages: the list (search, keyset pages, usage to date) with a fixed number of queries, the secret
shown once with a copy button, rotate and revoke through the audited services, and tenancy: a viewer's forged
POSTs are refused, another organisation's keys are 404."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.keys.models import ApiKey
from apps.keys.services import api_key_create
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _make_keys(org, owner, count):
    for n in range(count):
        api_key_create(organization=org, name=f"bulk {n}", scopes=["inference"], owner=owner, actor=owner)


def test_the_list_shows_the_organisations_keys_and_not_anothers(acme, globex, owner, signed_in):
    page = signed_in(owner).get("/console/keys/")
    html = page.content.decode()
    assert page.status_code == 200
    assert acme.key.key.prefix in html
    assert globex.key.key.prefix not in html
    assert 'data-testid="keys-table"' in html
    assert 'data-testid="create-key"' in html
    assert "<caption>" in html


def test_the_list_runs_a_fixed_number_of_queries(
    acme, owner, signed_in, django_assert_max_num_queries, django_assert_num_queries
):
    client = signed_in(owner)
    client.get("/console/keys/")  # warm the content-type cache
    # 13: the 12 of the list and its create form, plus whether the user may give a new key limits (a key policy).
    with django_assert_max_num_queries(13) as few:
        client.get("/console/keys/")
    _make_keys(acme.org, owner, 40)
    with django_assert_num_queries(len(few.captured_queries)):
        page = client.get("/console/keys/")
    assert page.content.decode().count('data-testid="key-row"') == 25


def test_pages_follow_each_other_without_repeats(acme, owner, signed_in):
    _make_keys(acme.org, owner, 30)
    client = signed_in(owner)
    first = client.get("/console/keys/").content.decode()
    older = re.search(r'href="\?older=([^"]+)"', first).group(1)
    second = client.get(f"/console/keys/?older={older}").content.decode()
    prefixes_first = set(re.findall(r'data-key-prefix="([^"]+)"', first))
    prefixes_second = set(re.findall(r'data-key-prefix="([^"]+)"', second))
    assert len(prefixes_first) == 25
    assert len(prefixes_second) == ApiKey.objects.filter(organization=acme.org).count() - 25
    assert not prefixes_first & prefixes_second
    newer = re.search(r'href="\?newer=([^"]+)"', second).group(1)
    back = client.get(f"/console/keys/?newer={newer}").content.decode()
    assert set(re.findall(r'data-key-prefix="([^"]+)"', back)) == prefixes_first


def test_search_finds_by_name_and_prefix(acme, owner, signed_in):
    client = signed_in(owner)
    by_name = client.get("/console/keys/", {"q": "service"}).content.decode()
    assert acme.service_key.key.prefix in by_name
    assert acme.key.key.prefix not in by_name
    by_prefix = client.get("/console/keys/", {"q": acme.key.key.prefix}).content.decode()
    assert acme.key.key.prefix in by_prefix
    assert acme.service_key.key.prefix not in by_prefix


def test_a_created_keys_secret_is_shown_once_with_a_copy_button(acme, owner, signed_in):
    client = signed_in(owner)
    response = client.post(
        "/console/keys/new/", {"organization": acme.org.pk, "name": "checkout", "scopes": ["inference"]}
    )
    assert response["Location"] == "/console/keys/secret/"
    page = client.get("/console/keys/secret/").content.decode()
    secret = re.search(r'data-testid="key-secret">([^<]+)<', page).group(1)
    assert secret.startswith("sk-inf-")
    assert 'data-testid="copy-key"' in page
    key = ApiKey.objects.get(name="checkout")
    assert key.owner == owner
    assert secret.startswith(key.prefix)
    assert AuditEvent.objects.filter(action="key.create", target_id=str(key.pk)).exists()
    again = client.get("/console/keys/secret/")
    assert again.status_code == 302
    assert secret not in client.get("/console/keys/").content.decode()


def test_a_key_expiring_on_a_past_day_is_refused(acme, owner, signed_in):
    client = signed_in(owner)
    body = {"organization": acme.org.pk, "name": "late", "scopes": ["inference"], "expires_on": "2020-01-01"}
    response = client.post("/console/keys/new/", body, follow=True)
    assert "in the past" in response.content.decode()
    assert not ApiKey.objects.filter(name="late").exists()


def test_rotate_keeps_the_old_key_for_the_grace_period_and_shows_the_new_secret(acme, owner, signed_in):
    client = signed_in(owner)
    key = acme.key.key
    response = client.post(f"/console/keys/{key.pk}/rotate/", {"grace_seconds": "3600"})
    assert response["Location"] == "/console/keys/secret/"
    page = client.get("/console/keys/secret/").content.decode()
    assert "new secret" in page
    key.refresh_from_db()
    assert key.is_usable()
    assert key.revoked_at is not None
    assert ApiKey.objects.get(rotated_from=key).name == key.name


def test_revoke_ends_the_key_and_is_audited(acme, owner, signed_in):
    key = acme.key.key
    response = signed_in(owner).post(f"/console/keys/{key.pk}/revoke/", {"reason": "leaked"})
    assert response.status_code == 302
    key.refresh_from_db()
    assert not key.is_usable()
    assert AuditEvent.objects.filter(action="key.revoke", target_id=str(key.pk)).exists()


def test_a_viewer_sees_keys_without_buttons_and_forged_posts_are_refused(acme, viewer, signed_in):
    client = signed_in(viewer)
    listing = client.get("/console/keys/").content.decode()
    assert acme.key.key.prefix in listing
    assert 'data-testid="create-key"' not in listing
    detail = client.get(f"/console/keys/{acme.key.key.pk}/").content.decode()
    assert 'data-testid="rotate-key"' not in detail
    assert 'data-testid="revoke-key"' not in detail
    key = acme.key.key
    assert client.post(f"/console/keys/{key.pk}/revoke/").status_code == 403
    assert client.post(f"/console/keys/{key.pk}/rotate/", {"grace_seconds": "0"}).status_code == 403
    created = client.post("/console/keys/new/", {"organization": acme.org.pk, "name": "x", "scopes": ["inference"]})
    assert created.status_code == 403
    key.refresh_from_db()
    assert key.is_usable()
    assert not ApiKey.objects.filter(name="x").exists()


def test_a_member_revokes_their_own_key_but_not_a_colleagues(acme, member, signed_in):
    client = signed_in(member)
    client.post("/console/keys/new/", {"organization": acme.org.pk, "name": "mine", "scopes": ["inference"]})
    mine = ApiKey.objects.get(name="mine", owner=member)
    assert client.post(f"/console/keys/{mine.pk}/revoke/").status_code == 302
    assert client.post(f"/console/keys/{acme.key.key.pk}/revoke/").status_code == 403
    service = client.post(
        "/console/keys/new/", {"organization": acme.org.pk, "name": "svc", "scopes": ["inference"], "service": "on"}
    )
    assert service.status_code == 403


def test_another_organisations_key_is_not_found(acme, globex, owner, signed_in):
    client = signed_in(owner)
    foreign = globex.key.key
    assert client.get(f"/console/keys/{foreign.pk}/").status_code == 404
    assert client.post(f"/console/keys/{foreign.pk}/revoke/").status_code == 404
    assert client.post(f"/console/keys/{foreign.pk}/rotate/", {"grace_seconds": "0"}).status_code == 404
    created = client.post("/console/keys/new/", {"organization": globex.org.pk, "name": "x", "scopes": ["inference"]})
    assert created.status_code == 403
    foreign.refresh_from_db()
    assert foreign.is_usable()


def test_the_key_page_shows_its_usage(acme, owner, signed_in, django_assert_max_num_queries):
    client = signed_in(owner)
    client.get(f"/console/keys/{acme.key.key.pk}/")
    # 14: the 12 of the page, plus the effective policy: the key's levels and which of them the user may open.
    with django_assert_max_num_queries(14):
        page = client.get(f"/console/keys/{acme.key.key.pk}/")
    html = page.content.decode()
    assert 'data-testid="key-usage-table"' in html
    assert acme.usage.model in html


def test_a_team_member_sees_only_the_keys_granted_to_their_team(acme, owner, roles, signed_in):
    from apps.rbac.models import Role
    from apps.rbac.services import object_grant

    bare = Role.objects.create(organization=acme.org, slug="bare", name="Bare")
    user = UserFactory(email="team@acme.test", password="x")
    MembershipFactory(user=user, organization=acme.org, role=bare).teams.add(acme.team)
    object_grant(obj=acme.key.key, actions=["view"], team=acme.team, actor=owner)
    client = signed_in(user)
    html = client.get("/console/keys/").content.decode()
    assert acme.key.key.prefix in html
    assert acme.service_key.key.prefix not in html
    assert 'data-testid="create-key"' not in html
    assert client.get(f"/console/keys/{acme.service_key.key.pk}/").status_code == 404
    assert client.post(f"/console/keys/{acme.key.key.pk}/revoke/").status_code == 403


def test_seeing_a_key_does_not_reveal_usage_the_role_may_not_see(acme, owner, signed_in):
    from apps.rbac.models import Role
    from apps.rbac.services import object_grant

    bare = Role.objects.create(organization=acme.org, slug="bare", name="Bare")
    user = UserFactory(email="team@acme.test", password="x")
    MembershipFactory(user=user, organization=acme.org, role=bare).teams.add(acme.team)
    object_grant(obj=acme.key.key, actions=["view"], team=acme.team, actor=owner)
    html = signed_in(user).get(f"/console/keys/{acme.key.key.pk}/").content.decode()
    assert "No requests recorded yet." in html
    assert acme.usage.request_id not in html


def test_the_list_and_the_detail_mark_a_vector_stores_own_key(acme, owner, signed_in):
    from apps.knowledge.services import store_key_issue

    store_key = store_key_issue(organization=acme.org, store_id="vs_marked", model="kb-embed").key
    client = signed_in(owner)

    listed = client.get("/console/keys/").content.decode()
    row = listed[listed.index(f'data-key-prefix="{store_key.prefix}"') :].split("</tr>", 1)[0]
    assert 'data-testid="key-knowledge"' in row
    assert (
        'data-testid="key-knowledge"'
        not in listed.split(f'data-key-prefix="{acme.key.key.prefix}"', 1)[1].split("</tr>", 1)[0]
    )
    detail = client.get(f"/console/keys/{store_key.pk}/").content.decode()
    assert 'data-testid="key-knowledge"' in detail
    assert "vs_marked" in detail


def test_a_person_cannot_create_a_knowledge_key_in_the_console(acme, owner, signed_in):
    client = signed_in(owner)
    body = {"organization": acme.org.pk, "name": "sneaky", "scopes": ["inference"], "purpose": "knowledge"}
    response = client.post("/console/keys/new/", body, follow=True)
    assert "issued by Inferia" in response.content.decode()
    assert not ApiKey.objects.filter(name="sneaky").exists()
