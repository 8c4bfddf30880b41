"""The Security page in headless Chromium against the running platform: recovery codes copied and downloaded (the
file built in the browser), signing in with a recovery code typed into the one code field and the message for one
used before, changing the password, and one browser ending another's session.

These tests change passwords, spend recovery codes and end sessions, so they use people of their own (committed for
the running server to see, deleted afterwards), never the package's shared owner."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest

from tests.browser.conftest import PASSWORD, _new_context, screenshot, totp_code

pytestmark = [pytest.mark.e2e, pytest.mark.django_db]

NEW_PASSWORD = "an entirely new passphrase"


@dataclass(frozen=True)
class People:
    """Who these tests sign in as: `guarded` has an authenticator (its secret and recovery codes here), the others
    sign in with a password alone."""

    guarded: str
    guarded_secret: str
    guarded_codes: list[str]
    changer: str
    traveller: str


@pytest.fixture(scope="module")
def people(console, django_db_blocker) -> Iterator[People]:
    from apps.orgs.models import User
    from apps.rbac.twofactor_services import totp_enrolment_confirm, totp_enrolment_start
    from tests.factories import UserFactory

    emails = ["guarded@security.test", "changer@security.test", "traveller@security.test"]
    with django_db_blocker.unblock():
        users = [UserFactory(email=email, password=PASSWORD) for email in emails]
        enrolment = totp_enrolment_start(user=users[0], actor=users[0])
        codes = totp_enrolment_confirm(user=users[0], code=pyotp.TOTP(enrolment.secret).now(), actor=users[0])
    try:
        yield People(emails[0], enrolment.secret, codes, emails[1], emails[2])
    finally:
        with django_db_blocker.unblock():
            User.objects.filter(email__in=emails).delete()


@pytest.fixture
def context_factory(browser, console) -> Iterator[Any]:
    contexts: list[Any] = []

    def make(**kwargs: Any) -> Any:
        context = _new_context(browser, console, **kwargs)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


def _password_step(page: Any, console: Any, email: str, password: str = PASSWORD) -> None:
    page.goto(console.url("/console/login/"))
    page.fill("#id_email", email)
    page.fill("#id_password", password)
    page.click("[data-testid=login-form] button[type=submit]")


def _path(page: Any) -> str:
    return urlsplit(page.url).path


def test_a_recovery_code_typed_into_the_code_field_signs_in_once(console, people, context_factory):
    page = context_factory().new_page()
    _password_step(page, console, people.guarded)
    page.wait_for_selector("[data-testid=login-verify-form]")
    field = page.locator("#id_code")
    assert field.get_attribute("inputmode") != "numeric"
    assert field.get_attribute("pattern") is None
    assert field.get_attribute("autocomplete") == "one-time-code"
    page.type("#id_code", people.guarded_codes[0])  # typed key by key, letters and hyphen included
    assert field.input_value() == people.guarded_codes[0]
    page.click("[data-testid=login-verify-form] button[type=submit]")
    page.wait_for_selector("[data-testid=sign-out]")
    assert "You signed in with a recovery code; 9 remain." in page.inner_text(".messages")
    page.click("[data-testid=sign-out]")
    page.wait_for_selector("[data-testid=login-form]")

    _password_step(page, console, people.guarded)
    page.wait_for_selector("[data-testid=login-verify-form]")
    page.fill("#id_code", people.guarded_codes[0])
    page.click("[data-testid=login-verify-form] button[type=submit]")
    page.wait_for_selector("#verify-error")
    assert "This recovery code was already used." in page.inner_text("#verify-error")
    assert _path(page) == "/console/login/verify/"
    screenshot(page, "security-recovery-code-reused")


def test_new_recovery_codes_can_be_copied_and_downloaded_without_asking_the_server_again(
    console, people, context_factory, django_db_blocker
):
    page = context_factory(permissions=["clipboard-read", "clipboard-write"]).new_page()
    _password_step(page, console, people.guarded)
    page.wait_for_selector("[data-testid=login-verify-form]")
    with django_db_blocker.unblock():
        page.fill("#id_code", totp_code(email=people.guarded, secret=people.guarded_secret))
    page.click("[data-testid=login-verify-form] button[type=submit]")
    page.wait_for_selector("[data-testid=sign-out]")
    page.goto(console.url("/console/security/"))
    with django_db_blocker.unblock():
        page.fill("#regen-code", totp_code(email=people.guarded, secret=people.guarded_secret))
    page.click("text=Generate new codes")
    page.wait_for_selector("[data-testid=recovery-codes]")
    codes = [text.strip() for text in page.locator("[data-testid=recovery-codes] code").all_inner_texts()]
    assert len(codes) == 10

    page.click("[data-testid=copy-codes]")
    page.wait_for_selector("[data-testid=copy-codes][data-copied=true]")
    assert page.evaluate("navigator.clipboard.readText()").split() == codes

    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    with page.expect_download() as started:
        page.click("[data-testid=download-codes]")
    download = started.value
    assert download.suggested_filename == "inferia-recovery-codes.txt"
    text = Path(download.path()).read_text()
    assert people.guarded in text
    assert [line for line in text.splitlines() if line in codes] == codes
    assert not [url for url in requests if url.startswith("http")]  # built in the browser: no second request
    assert "Downloaded inferia-recovery-codes.txt." in page.inner_text("#codes-status")
    screenshot(page, "security-recovery-codes")


def test_changing_the_password_keeps_this_browser_signed_in_and_signs_out_the_other(console, people, context_factory):
    here, elsewhere = context_factory().new_page(), context_factory().new_page()
    for page in (here, elsewhere):
        _password_step(page, console, people.changer)
        page.wait_for_selector("[data-testid=sign-out]")
    here.goto(console.url("/console/security/"))
    here.fill("#id_current_password", PASSWORD)
    here.fill("#id_new_password", "short")
    here.fill("#id_new_password_again", "short")
    here.click("[data-testid=password-change]")
    here.wait_for_selector("#new-password-error")
    assert "too short" in here.inner_text("#new-password-error")

    here.fill("#id_current_password", PASSWORD)
    here.fill("#id_new_password", NEW_PASSWORD)
    here.fill("#id_new_password_again", NEW_PASSWORD)
    here.click("[data-testid=password-change]")
    here.wait_for_selector(".notice-success")
    assert "Your password is changed. 1 other session signed out." in here.inner_text(".messages")
    assert _path(here) == "/console/security/"
    screenshot(here, "security-password-changed")

    elsewhere.goto(console.url("/console/security/"))
    elsewhere.wait_for_selector("[data-testid=login-form]")
    assert _path(elsewhere) == "/console/login/"
    _password_step(elsewhere, console, people.changer, NEW_PASSWORD)
    elsewhere.wait_for_selector("[data-testid=sign-out]")


def test_one_browser_signs_another_out(console, people, context_factory):
    mine, other = context_factory().new_page(), context_factory().new_page()
    for page in (other, mine):
        _password_step(page, console, people.traveller)
        page.wait_for_selector("[data-testid=sign-out]")
    mine.goto(console.url("/console/security/"))
    rows = mine.locator("[data-testid=session-row]")
    assert rows.count() == 2
    assert mine.locator("[data-testid=session-row][data-current=true] [data-testid=this-session]").count() == 1
    screenshot(mine, "security-sessions")
    mine.click("[data-testid=session-row]:not([data-current]) [data-testid=session-end]")
    mine.wait_for_selector(".notice-success")
    assert mine.locator("[data-testid=session-row]").count() == 1

    other.goto(console.url("/console/keys/"))
    other.wait_for_selector("[data-testid=login-form]")
    assert _path(other) == "/console/login/"

    # And all others at once (the button asks first).
    _password_step(other, console, people.traveller)
    other.wait_for_selector("[data-testid=sign-out]")
    mine.goto(console.url("/console/security/"))
    mine.once("dialog", lambda dialog: dialog.accept())
    mine.click("[data-testid=sessions-end-others]")
    mine.wait_for_selector(".notice-success")
    assert "1 other session signed out." in mine.inner_text(".messages")
    other.reload()
    other.wait_for_selector("[data-testid=login-form]")
