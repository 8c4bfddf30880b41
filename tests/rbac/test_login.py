"""Sign-in through the console login form (Django admin's login redirects there): failures are counted per
account and address, lockout refuses even the
right password until the window passes, and every attempt is audited."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from apps.audit.models import AuditEvent
from apps.orgs.models import User
from apps.rbac.login_services import _counter_keys, login_limits

PASSWORD = "correct horse battery"


@pytest.fixture
def person(db):
    user = User.objects.create_user("locksmith@acme.test", PASSWORD, is_staff=True)
    keys = _counter_keys(user.email, "127.0.0.1")
    cache.delete_many(keys)
    yield user
    cache.delete_many(keys)


def _login(client, email, password, address="127.0.0.1"):
    return client.post("/console/login/", {"email": email, "password": password}, REMOTE_ADDR=address)


def test_a_good_password_signs_in_and_is_audited(person, client):
    response = _login(client, person.email, PASSWORD)
    assert response.status_code == 302
    event = AuditEvent.objects.get(action="login.success")
    assert (event.actor_user_id, event.ip_address) == (person.pk, "127.0.0.1")


def test_failures_are_audited_even_for_unknown_accounts(person, client):
    _login(client, "nobody@acme.test", "wrong")
    event = AuditEvent.objects.get(action="login.failure")
    assert event.changes == {"email": "nobody@acme.test", "reason": "bad credentials"}
    assert event.outcome == "failure"
    cache.delete_many(_counter_keys("nobody@acme.test", "127.0.0.1"))


def test_the_account_locks_after_repeated_failures_even_for_the_right_password(person, client):
    limit = login_limits().per_account
    for _ in range(limit):
        assert _login(client, person.email, "wrong password").status_code == 200
    locked = _login(client, person.email, PASSWORD)
    assert locked.status_code == 200  # the form again, not the redirect of a successful sign-in
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login.failure", outcome="denied").count() == 1
    assert not AuditEvent.objects.filter(action="login.success").exists()


def test_the_lockout_holds_from_another_address_too(person, client):
    for _ in range(login_limits().per_account):
        _login(client, person.email, "wrong password", address="198.51.100.1")
    assert _login(client, person.email, PASSWORD, address="198.51.100.2").status_code == 200
    assert "_auth_user_id" not in client.session
    cache.delete_many(_counter_keys(person.email, "198.51.100.1") + _counter_keys(person.email, "198.51.100.2"))


def test_a_success_before_the_limit_clears_the_account_count(person, client):
    for _ in range(login_limits().per_account - 1):
        _login(client, person.email, "wrong password")
    assert _login(client, person.email, PASSWORD).status_code == 302
    client.logout()
    _login(client, person.email, "wrong password")
    assert _login(client, person.email, PASSWORD).status_code == 302


def test_the_admin_login_form_sends_people_to_the_console_login(person, client):
    response = client.post("/admin/login/?next=/admin/", {"username": person.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/console/login/?next=/admin/"
    assert "_auth_user_id" not in client.session
    assert not AuditEvent.objects.filter(action="login.success").exists()
