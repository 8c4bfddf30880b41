"""Two-factor sign-in through the real console views: enrolment with a QR code, the code step at sign-in,
recovery codes, replay and lockout, disabling, organisations that require it, and the admin behind it."""

from __future__ import annotations

import re
import time

import pyotp
import pytest

from apps.audit.models import AuditEvent
from apps.orgs.models import User
from apps.rbac.models import RecoveryCode, TotpDevice
from tests.factories import UserFactory

PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def _clean_counters(redis_cache):
    """Lockout counters live in Redis: every test starts (and ends) with none."""


@pytest.fixture
def person(db):
    return UserFactory(email="ada@acme.test", password=PASSWORD)


def _password_step(client, email="ada@acme.test", password=PASSWORD, next_url=""):
    data = {"email": email, "password": password}
    if next_url:
        data["next"] = next_url
    return client.post("/console/login/", data)


def _enrol(client, user) -> tuple[pyotp.TOTP, list[str]]:
    """Walk enrolment as a person would: read the key off the page, type a code, read the recovery codes."""
    page = client.get("/console/security/2fa/enrol/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html
    assert 'aria-label="QR code for your authenticator app"' in html
    secret = re.search(r'class="secret-key"[^>]*>([^<]+)</code>', html).group(1).replace(" ", "")
    totp = pyotp.TOTP(secret)
    confirmed = client.post("/console/security/2fa/enrol/", {"code": totp.now()})
    assert confirmed.status_code == 302
    assert confirmed["Location"] == "/console/security/recovery-codes/"
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", client.get(confirmed["Location"]).content.decode())
    return totp, codes


def _code_after(totp: pyotp.TOTP, seconds: int) -> str:
    """A code from a later time step (still inside the accepted window), since each code is good only once."""
    return totp.at(time.time() + seconds)


@pytest.fixture
def enrolled(person, client):
    """`person` with a confirmed authenticator, signed out again; gives the TOTP and the recovery codes."""
    assert _password_step(client).status_code == 302
    totp, codes = _enrol(client, person)
    client.post("/console/logout/")
    return totp, codes


def test_enrolment_shows_a_qr_code_and_needs_a_valid_code(person, client):
    _password_step(client)
    page = client.get("/console/security/2fa/enrol/").content.decode()
    secret = re.search(r'class="secret-key"[^>]*>([^<]+)</code>', page).group(1).replace(" ", "")
    assert client.get("/console/security/2fa/enrol/").content.decode().count(secret[:4]) >= 1  # same secret on reload

    wrong = client.post("/console/security/2fa/enrol/", {"code": "000000"})
    assert wrong.status_code == 200
    assert b"That code is not valid" in wrong.content
    assert not TotpDevice.objects.get(user=person).is_confirmed
    assert AuditEvent.objects.filter(action="2fa.failure", actor_user_id=person.pk).count() == 1

    right = client.post("/console/security/2fa/enrol/", {"code": pyotp.TOTP(secret).now()})
    assert right["Location"] == "/console/security/recovery-codes/"
    assert TotpDevice.objects.get(user=person).is_confirmed
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"2fa.enrol", "2fa.confirm"}


def test_recovery_codes_are_shown_once_and_stored_hashed(person, client):
    _password_step(client)
    _, codes = _enrol(client, person)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    again = client.get("/console/security/recovery-codes/")
    assert again.status_code == 302
    assert again["Location"] == "/console/security/"
    stored = set(RecoveryCode.objects.filter(user=person).values_list("code_hash", flat=True))
    assert len(stored) == 10
    assert not stored & {c.replace("-", "") for c in codes}
    assert not stored & set(codes)


def test_sign_in_asks_for_the_code_once_enrolled(enrolled, person, client):
    totp, _ = enrolled
    step = _password_step(client, next_url="/console/security/")
    assert step.status_code == 302
    assert step["Location"] == "/console/login/verify/"
    assert "_auth_user_id" not in client.session  # the password alone signs no one in
    assert client.get("/console/").status_code == 302

    wrong = client.post("/console/login/verify/", {"code": "123456"})
    assert wrong.status_code == 200
    assert b"That code is not valid" in wrong.content
    assert "_auth_user_id" not in client.session

    done = client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    assert done.status_code == 302
    assert done["Location"] == "/console/security/"
    assert client.session["_auth_user_id"] == str(person.pk)
    assert client.session["inferia_second_factor"] == "totp"
    assert client.get("/console/").status_code == 200
    assert AuditEvent.objects.filter(action="2fa.verify", actor_user_id=person.pk, changes__method="totp").exists()


def test_the_session_key_changes_at_each_step(enrolled, client):
    totp, _ = enrolled
    client.get("/console/login/")
    client.session.save()
    before = client.session.session_key
    _password_step(client)
    middle = client.cookies["sessionid"].value
    client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    after = client.cookies["sessionid"].value
    assert len({before, middle, after}) == 3


def test_a_code_is_good_only_once(enrolled, client):
    totp, _ = enrolled
    code = _code_after(totp, 30)
    _password_step(client)
    assert client.post("/console/login/verify/", {"code": code}).status_code == 302
    client.post("/console/logout/")
    _password_step(client)
    replay = client.post("/console/login/verify/", {"code": code})
    assert replay.status_code == 200
    assert "_auth_user_id" not in client.session


def test_a_recovery_code_signs_in_once(enrolled, person, client):
    _, codes = enrolled
    _password_step(client)
    used = client.post("/console/login/verify/", {"code": codes[0].upper().replace("-", " ")})
    assert used.status_code == 302
    assert client.session["inferia_second_factor"] == "recovery"
    assert AuditEvent.objects.filter(action="2fa.recovery_used", changes__remaining=9).exists()
    client.post("/console/logout/")
    _password_step(client)
    assert client.post("/console/login/verify/", {"code": codes[0]}).status_code == 200
    assert "_auth_user_id" not in client.session


def test_wrong_codes_lock_the_second_step_even_for_the_right_code(enrolled, person, client, settings):
    totp, _ = enrolled
    _password_step(client)
    for _ in range(settings.INFERIA_2FA_MAX_FAILURES):
        client.post("/console/login/verify/", {"code": "000000"})
    locked = client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    assert locked.status_code == 200
    assert b"Too many wrong codes" in locked.content
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="2fa.failure", outcome="denied", actor_user_id=person.pk).count() == 1


def test_a_pending_second_step_expires(enrolled, client, settings):
    totp, _ = enrolled
    _password_step(client)
    settings.INFERIA_2FA_PENDING_SECONDS = -1
    expired = client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    assert expired.status_code == 302
    assert expired["Location"] == "/console/login/"
    assert "_auth_user_id" not in client.session


def test_a_half_signed_in_session_is_not_signed_in_for_the_api(enrolled, client):
    _password_step(client)
    assert client.get("/api/organizations/").status_code in (401, 403)


def test_disabling_needs_a_valid_code(enrolled, person, client):
    totp, codes = enrolled
    _password_step(client)
    client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    client.post("/console/security/2fa/disable/", {"code": "999999"})
    assert TotpDevice.objects.filter(user=person, confirmed_at__isnull=False).exists()
    # A code older than the last one accepted is refused (no replays), so this proof is a recovery code.
    client.post("/console/security/2fa/disable/", {"code": _code_after(totp, -30)})
    assert TotpDevice.objects.filter(user=person).exists()
    client.post("/console/security/2fa/disable/", {"code": codes[3]})
    assert not TotpDevice.objects.filter(user=person).exists()
    assert not RecoveryCode.objects.filter(user=person).exists()
    assert AuditEvent.objects.filter(action="2fa.disable", actor_user_id=person.pk).exists()
    client.post("/console/logout/")
    assert _password_step(client)["Location"] == "/console/"  # no code asked any more


def test_an_organisation_that_requires_2fa_sends_its_owner_to_enrolment(org, owner, member, client):
    org.require_2fa = True
    org.save()
    _password_step(client, email=owner.email)
    assert client.get("/console/")["Location"] == "/console/security/2fa/enrol/"
    assert client.get("/admin/")["Location"] == "/console/security/2fa/enrol/"
    assert client.get("/console/security/2fa/enrol/").status_code == 200
    totp, _ = _enrol(client, owner)
    assert client.get("/console/").status_code == 200
    refused = client.post("/console/security/2fa/disable/", {"code": _code_after(totp, 30)})
    assert refused.status_code == 302
    assert TotpDevice.objects.filter(user=owner).exists()  # required: it stays on

    client.post("/console/logout/")
    _password_step(client, email=member.email)
    assert client.get("/console/").status_code == 200  # members are not forced


def test_the_admin_needs_the_second_factor_too(enrolled, person, client):
    totp, _ = enrolled
    User.objects.filter(pk=person.pk).update(is_staff=True, is_superuser=True)
    client.force_login(User.objects.get(pk=person.pk))  # a session made without the code
    bounced = client.get("/admin/")
    assert bounced.status_code == 302
    assert bounced["Location"].startswith("/console/login/")
    assert "_auth_user_id" not in client.session

    _password_step(client, next_url="/admin/")
    done = client.post("/console/login/verify/", {"code": _code_after(totp, 30)})
    assert done["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
