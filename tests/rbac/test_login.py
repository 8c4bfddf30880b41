"""Sign-in through the console login form (Django admin's login redirects there): failures lock the (account,
address) pair, even for the right password, until the window passes; across addresses an account is only slowed
down; X-Forwarded-For counts only from trusted proxies; every attempt is audited."""

from __future__ import annotations

import time

import pytest
import time_machine

from apps.audit.models import AuditEvent
from apps.rbac.login_services import login_limits
from tests.factories import UserFactory

PASSWORD = "correct horse battery"


@pytest.fixture
def person(db, redis_cache):
    return UserFactory(email="locksmith@acme.test", password=PASSWORD, is_staff=True)


def _login(client, email, password, address="127.0.0.1", **headers):
    return client.post("/console/login/", {"email": email, "password": password}, REMOTE_ADDR=address, **headers)


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


def test_the_account_locks_after_repeated_failures_even_for_the_right_password(person, client):
    limit = login_limits().per_pair
    for _ in range(limit):
        assert _login(client, person.email, "wrong password").status_code == 200
    locked = _login(client, person.email, PASSWORD)
    assert locked.status_code == 200  # the form again, not the redirect of a successful sign-in
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="login.failure", outcome="denied").count() == 1
    assert not AuditEvent.objects.filter(action="login.success").exists()


def test_failures_from_one_address_lock_that_address_only(person, client):
    for _ in range(login_limits().per_pair):
        _login(client, person.email, "wrong password", address="198.51.100.1")
    assert _login(client, person.email, PASSWORD, address="198.51.100.1").status_code == 200
    assert "_auth_user_id" not in client.session
    assert _login(client, person.email, PASSWORD, address="198.51.100.2").status_code == 302
    assert AuditEvent.objects.get(action="login.success").ip_address == "198.51.100.2"


def test_failures_from_many_addresses_slow_the_account_down_without_locking_it(person, client, settings):
    settings.INFERIA_LOGIN_SLOWDOWN_AFTER = 3
    settings.INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS = 1.0
    with time_machine.travel(time.time(), tick=False) as clock:
        for n in range(3):
            _login(client, person.email, "wrong password", address=f"203.0.113.{n}")
        slowed = _login(client, person.email, PASSWORD, address="198.51.100.9")
        assert "Wait 1 seconds" in slowed.content.decode()
        assert AuditEvent.objects.filter(action="login.failure", changes__reason="slowed").count() == 1
        clock.shift(0.9)
        assert _login(client, person.email, PASSWORD, address="198.51.100.9").status_code == 200  # still slowed
        clock.shift(0.2)
        assert _login(client, person.email, PASSWORD, address="198.51.100.9").status_code == 302


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(person, client, settings):
    settings.INFERIA_TRUSTED_PROXIES = ["10.0.0.0/8"]
    for n in range(login_limits().per_pair):
        _login(client, person.email, "wrong", address="192.0.2.50", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}")
    # Each forged header named a fresh address, yet the failures all count against the real peer.
    assert _login(client, person.email, PASSWORD, address="192.0.2.50").status_code == 200
    failure = AuditEvent.objects.filter(action="login.failure").first()
    assert failure.ip_address == "192.0.2.50"


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(person, client, settings):
    settings.INFERIA_TRUSTED_PROXIES = ["10.0.0.0/8", "fd00::/8"]
    via_proxies = {"address": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "6.6.6.6, 198.51.100.7, 10.9.9.9"}
    for _ in range(login_limits().per_pair):
        _login(client, person.email, "wrong", **via_proxies)
    assert AuditEvent.objects.filter(action="login.failure").first().ip_address == "198.51.100.7"
    assert _login(client, person.email, PASSWORD, **via_proxies).status_code == 200  # that client is locked
    other = {"address": "10.1.2.3", "HTTP_X_FORWARDED_FOR": "198.51.100.8"}
    assert _login(client, person.email, PASSWORD, **other).status_code == 302  # another one behind the proxy is not


def test_a_success_before_the_limit_clears_the_account_count(person, client):
    for _ in range(login_limits().per_pair - 1):
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


def _settings_in_a_fresh_process(**env):
    import os
    import subprocess
    import sys

    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'inferia_site.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.INFERIA_LOGIN_MAX_FAILURES, s.INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS, s.INFERIA_TRUSTED_PROXIES)"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_the_throttle_and_trusted_proxies_come_from_the_environment():
    done = _settings_in_a_fresh_process(
        INFERIA_LOGIN_MAX_FAILURES="7", INFERIA_LOGIN_SLOWDOWN_MAX_SECONDS="2.5", INFERIA_TRUSTED_PROXIES="10.0.0.0/8"
    )
    assert done.stdout.split() == ["7", "2.5", "['10.0.0.0/8']"]
    refused = _settings_in_a_fresh_process(INFERIA_TRUSTED_PROXIES="10.0.0.0/8,not-a-network")
    assert refused.returncode != 0
    assert "INFERIA_TRUSTED_PROXIES" in refused.stderr
