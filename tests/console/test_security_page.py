"""The Security page as its owner uses it: recovery codes that can be copied and downloaded, one code field that takes
a recovery code, reused codes named as such, changing the password, and the list of signed-in sessions with sign-out
(never reaching another person's sessions)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pyotp
import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from apps.audit.models import AuditEvent
from apps.rbac.account_services import session_key_digest, user_sessions_active
from apps.rbac.models import UserSession
from apps.rbac.twofactor_services import totp_enrolment_confirm, totp_enrolment_start

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a new and longer passphrase"
FIREFOX = "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture(autouse=True)
def _clean_counters(redis_cache):
    """Sign-in counters and last-seen marks live in Redis."""


def _browser(user, *, agent: str = FIREFOX, address: str = "198.51.100.7") -> Client:
    """A client that signed in through the password form, as a browser with `agent` at `address`."""
    client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=address)
    response = client.post("/console/login/", {"email": user.email, "password": PASSWORD})
    assert response.status_code == 302, response.content[:500]
    return client


def _enrolled(user) -> tuple[pyotp.TOTP, list[str]]:
    enrolment = totp_enrolment_start(user=user, actor=user)
    codes = totp_enrolment_confirm(user=user, code=pyotp.TOTP(enrolment.secret).now(), actor=user)
    return pyotp.TOTP(enrolment.secret), codes


def _signed_out(client: Client) -> bool:
    response = client.get("/console/security/")
    return response.status_code == 302 and response["Location"].startswith("/console/login/")


# --- Recovery codes ----------------------------------------------------------------------------------------------


def test_the_recovery_codes_page_offers_copy_and_a_download_built_in_the_browser(owner):
    client = _browser(owner)
    enrolment_page = client.get("/console/security/2fa/enrol/").content.decode()
    secret = re.search(r'class="secret-key"[^>]*>([^<]+)</code>', enrolment_page).group(1).replace(" ", "")
    client.post("/console/security/2fa/enrol/", {"code": pyotp.TOTP(secret).now()})
    # Enrolment gives the session a new key; the list of sessions follows it.
    assert UserSession.objects.get(user=owner).key_digest == session_key_digest(client.session.session_key)

    page = client.get("/console/security/recovery-codes/")
    html = page.content.decode()
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", html)
    assert len(codes) == 10
    assert 'data-testid="copy-codes"' in html
    assert 'data-copy-target="#recovery-codes"' in html
    assert 'data-testid="download-codes"' in html
    assert "Download (.txt)" in html
    assert '<script src="/static/console/recovery_codes.js" defer></script>' in html
    assert "<script>" not in html  # the CSP allows no inline script
    script = Path(finders.find("console/recovery_codes.js")).read_text()
    assert "new Blob(" in script
    assert "fetch(" not in script
    assert "XMLHttpRequest" not in script
    # Copying takes the list's text: one code a line.
    listing = re.search(r'<ol class="codes" id="recovery-codes"[^>]*>(.*?)</ol>', html, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", listing).split() == codes
    # Shown once: the page does not reveal them again.
    assert client.get("/console/security/recovery-codes/")["Location"] == "/console/security/"


# --- The code field at sign-in -----------------------------------------------------------------------------------


def test_the_code_field_lets_a_phone_type_a_recovery_code(owner, client):
    _enrolled(owner)
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    html = client.get("/console/login/verify/").content.decode()
    field = re.search(r'<input[^>]*id="id_code"[^>]*>', html, re.S).group(0)
    assert 'autocomplete="one-time-code"' in field
    assert 'inputmode="numeric"' not in field
    assert "pattern=" not in field
    assert "recovery code" in html


def test_a_recovery_code_in_the_code_field_signs_in_and_a_reused_one_says_so(owner):
    _, codes = _enrolled(owner)
    client = Client()
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    assert client.post("/console/login/verify/", {"code": codes[0]})["Location"] == "/console/"
    client.post("/console/logout/")

    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    reused = client.post("/console/login/verify/", {"code": codes[0].upper()})
    assert reused.status_code == 200
    assert "This recovery code was already used." in reused.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="2fa.failure", changes__reason="reused recovery code").count() == 1

    wrong = client.post("/console/login/verify/", {"code": "zzzzz-zzzzz"})
    assert "That code is not valid" in wrong.content.decode()


def test_a_reused_authenticator_code_says_so(owner):
    totp, _ = _enrolled(owner)
    code = totp.at(time.time() + 30)
    client = Client()
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    assert client.post("/console/login/verify/", {"code": code}).status_code == 302
    client.post("/console/logout/")
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    reused = client.post("/console/login/verify/", {"code": code})
    assert "This code was already used." in reused.content.decode()
    assert "_auth_user_id" not in client.session


# --- Password ----------------------------------------------------------------------------------------------------


def _change(client: Client, current: str = PASSWORD, new: str = NEW_PASSWORD, again: str | None = None):
    data = {"current_password": current, "new_password": new, "new_password_again": new if again is None else again}
    return client.post("/console/security/password/", data)


def test_changing_the_password_keeps_this_session_and_signs_out_the_others(owner):
    here, elsewhere = _browser(owner), _browser(owner, agent=IPHONE)
    response = _change(here)
    assert response.status_code == 302
    assert response["Location"] == "/console/security/"
    owner.refresh_from_db()
    assert owner.check_password(NEW_PASSWORD)
    page = here.get("/console/security/")
    assert page.status_code == 200
    assert "Your password is changed. 1 other session signed out." in page.content.decode()
    assert _signed_out(elsewhere)
    event = AuditEvent.objects.get(action="password.change", actor_user_id=owner.pk)
    assert event.changes == {"sessions_ended": 1}
    assert UserSession.objects.filter(user=owner).count() == 1  # this one, under its new key
    assert UserSession.objects.get(user=owner).key_digest == session_key_digest(here.session.session_key)


@pytest.mark.parametrize(
    ("current", "new", "again", "field_error"),
    [
        ("not my password", NEW_PASSWORD, None, "That is not your current password."),
        (PASSWORD, NEW_PASSWORD, "something else entirely", "The two new passwords are not the same."),
        (PASSWORD, "short", None, "This password is too short."),
        (PASSWORD, "password123", None, "This password is too common."),
        (PASSWORD, PASSWORD, None, "The new password is the same as the current one."),
        (PASSWORD, "bad\x00password-long", None, "Null characters are not allowed."),
        (PASSWORD, "x" * 2000, None, "Ensure this value has at most 1024 characters"),
    ],
)
def test_a_refused_password_change_says_why_and_changes_nothing(owner, current, new, again, field_error):
    client = _browser(owner)
    response = _change(client, current, new, again)
    assert response.status_code == 400
    assert field_error in response.content.decode()
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="password.change").exists()


def test_wrong_current_passwords_count_towards_the_sign_in_throttle(owner, settings):
    client = _browser(owner)
    for _ in range(settings.INFERIA_LOGIN_MAX_FAILURES):
        _change(client, current="not my password")
    assert AuditEvent.objects.filter(action="login.failure", actor_user_id=owner.pk).count() >= 1
    locked = _change(client)
    assert "Too many wrong passwords" in locked.content.decode()
    owner.refresh_from_db()
    assert owner.check_password(PASSWORD)


# --- Sessions ----------------------------------------------------------------------------------------------------


def test_the_page_lists_the_users_sessions_and_marks_this_one(owner, outsider):
    here = _browser(owner, agent=FIREFOX, address="198.51.100.7")
    _browser(owner, agent=IPHONE, address="203.0.113.9")
    _browser(outsider, agent=IPHONE, address="192.0.2.44")
    html = here.get("/console/security/").content.decode()
    rows = re.findall(r'<tr data-testid="session-row".*?</tr>', html, re.S)
    assert len(rows) == 2
    assert 'data-current="true"' in rows[0]
    assert "This session" in rows[0]
    assert "Firefox 128 on Ubuntu" in rows[0]
    assert "198.51.100.7" in rows[0]
    assert "Mobile Safari 17 on iOS" in rows[1]
    assert "203.0.113.9" in rows[1]
    assert 'data-testid="session-end"' not in rows[0]
    assert 'data-testid="session-end"' in rows[1]
    assert "192.0.2.44" not in html


def test_signing_out_another_session_ends_it_everywhere(owner):
    here, elsewhere = _browser(owner), _browser(owner, agent=IPHONE)
    assert elsewhere.get("/api/organizations/").status_code == 200
    other = UserSession.objects.get(key_digest=session_key_digest(elsewhere.session.session_key))
    response = here.post(f"/console/security/sessions/{other.pk}/end/")
    assert response["Location"] == "/console/security/"
    assert _signed_out(elsewhere)
    assert elsewhere.get("/api/organizations/").status_code in (401, 403)
    assert not UserSession.objects.filter(pk=other.pk).exists()
    event = AuditEvent.objects.get(action="session.end", actor_user_id=owner.pk)
    assert event.changes["sessions"][0]["user_agent"] == IPHONE
    assert here.get("/console/security/").status_code == 200


def test_another_users_session_can_be_neither_listed_nor_ended(owner, outsider):
    mine, theirs = _browser(owner), _browser(outsider)
    their_row = UserSession.objects.get(user=outsider)
    assert mine.post(f"/console/security/sessions/{their_row.pk}/end/").status_code == 404
    assert theirs.get("/console/security/").status_code == 200
    assert UserSession.objects.filter(pk=their_row.pk).exists()
    mine.post("/console/security/sessions/end-others/")
    assert theirs.get("/console/security/").status_code == 200
    assert not AuditEvent.objects.filter(action="session.end").exists()


def test_the_current_session_is_ended_by_signing_out_not_from_the_list(owner):
    client = _browser(owner)
    row = UserSession.objects.get(user=owner)
    page = client.post(f"/console/security/sessions/{row.pk}/end/", follow=True)
    assert "sign out to end it" in page.content.decode()
    assert client.get("/console/security/").status_code == 200
    client.post("/console/logout/")
    assert not UserSession.objects.filter(user=owner).exists()


def test_signing_out_all_other_sessions(owner):
    here = _browser(owner)
    others = [_browser(owner, agent=IPHONE, address=f"203.0.113.{n}") for n in range(3)]
    response = here.post("/console/security/sessions/end-others/", follow=True)
    assert "3 other sessions signed out." in response.content.decode()
    assert all(_signed_out(other) for other in others)
    assert here.get("/console/security/").status_code == 200
    assert AuditEvent.objects.get(action="session.end_others").changes["count"] == 3
    assert [s.current for s in user_sessions_active(user=owner, current_key=here.session.session_key)] == [True]


def test_a_session_from_before_the_list_joins_it_and_last_seen_is_written_at_most_once_a_minute(owner, redis_cache):
    client = Client(HTTP_USER_AGENT=FIREFOX)
    client.force_login(owner)
    assert UserSession.objects.filter(user=owner).count() == 1  # Django's login() keeps the list, whatever the way in
    UserSession.objects.all().delete()  # as for a session signed in before the list existed
    redis_cache.flushdb()
    client.get("/console/security/")
    row = UserSession.objects.get(user=owner)
    assert row.user_agent == FIREFOX
    long_ago = row.created_at.replace(year=2020)
    UserSession.objects.filter(pk=row.pk).update(last_seen_at=long_ago)
    client.get("/console/")
    assert UserSession.objects.get(pk=row.pk).last_seen_at == long_ago  # seen less than a minute ago
    redis_cache.flushdb()  # the minute passes
    client.get("/console/")
    assert UserSession.objects.get(pk=row.pk).last_seen_at > long_ago


def test_the_session_key_is_not_stored_in_clear_and_the_user_agent_is_bounded(owner):
    client = _browser(owner, agent="Evil\x00Agent/" + "x" * 5000)
    row = UserSession.objects.get(user=owner)
    key = client.session.session_key
    assert key not in (row.key_digest, row.key_encrypted)
    assert "\x00" not in row.user_agent
    assert len(row.user_agent) == 300


def test_ended_sessions_drop_off_the_list(owner):
    here, elsewhere = _browser(owner), _browser(owner, agent=IPHONE)
    elsewhere.session.flush()  # ended behind the list's back (expired, or signed out by admin)
    html = here.get("/console/security/").content.decode()
    assert html.count('data-testid="session-row"') == 1
    assert UserSession.objects.filter(user=owner).count() == 1
