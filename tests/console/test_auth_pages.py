"""The console's sign-in pages as a browser sees them: labelled fields, a working stylesheet, safe redirects,
sign-out by POST only, and the landing page showing the user's organisations."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders

from apps.audit.models import AuditEvent

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _clean_counters(redis_cache):
    """Sign-in counters live in Redis."""


def _labels_match_inputs(html: str) -> None:
    """Every visible input has a <label for=...> naming it."""
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    inputs = re.findall(r'<input(?![^>]*type="hidden")[^>]*id="([^"]+)"', html)
    assert inputs
    assert set(inputs) <= labels, (inputs, labels)


def test_the_login_page_has_labelled_fields_and_the_stylesheet(client, db):
    page = client.get("/console/login/")
    html = page.content.decode()
    assert page.status_code == 200
    _labels_match_inputs(html)
    assert 'autocomplete="current-password"' in html
    assert 'lang="en"' in html
    assert "/static/console/console.css" in html
    assert finders.find("console/console.css")
    assert page["Cache-Control"].startswith("max-age=0")


def test_a_wrong_password_says_so_without_saying_which_part(owner, client):
    page = client.post("/console/login/", {"email": owner.email, "password": "nope"})
    assert page.status_code == 200
    assert b'role="alert"' in page.content
    assert b"do not match an account" in page.content


def test_next_may_not_leave_the_site(owner, client):
    response = client.post(
        "/console/login/", {"email": owner.email, "password": PASSWORD, "next": "https://evil.test/"}
    )
    assert response["Location"] == "/console/"


def test_the_landing_page_lists_the_users_organisations(owner, client):
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    page = client.get("/console/")
    assert page.status_code == 200
    assert b"Acme" in page.content
    assert b"Owner" in page.content
    assert b"Two-factor sign-in is off" in page.content


def test_console_pages_need_a_sign_in(db, client):
    for url in ("/console/", "/console/security/", "/console/security/2fa/enrol/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/console/login/?next="), url


def test_sign_out_is_a_post_and_is_audited(owner, client):
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    assert client.get("/console/logout/").status_code == 405
    assert "_auth_user_id" in client.session
    response = client.post("/console/logout/")
    assert response["Location"] == "/console/login/"
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="logout", actor_user_id=owner.pk).exists()


def test_the_security_page_offers_enrolment(owner, client):
    client.post("/console/login/", {"email": owner.email, "password": PASSWORD})
    page = client.get("/console/security/")
    assert page.status_code == 200
    assert b"Set up two-factor sign-in" in page.content
    enrol = client.get("/console/security/2fa/enrol/").content.decode()
    _labels_match_inputs(enrol)
