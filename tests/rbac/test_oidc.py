"""Single sign-on against a real (small) OpenID Connect provider on a loopback port: the full code flow through
the console's views, users and memberships mapped from claims, and refusals (bad state, nonce, signature,
unverified e-mail, superadmin)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from apps.audit.models import AuditEvent
from apps.orgs.models import Membership, Organization, User
from apps.rbac.models import OidcIdentity
from apps.rbac.twofactor_services import totp_enrolment_confirm, totp_enrolment_start
from tests.factories import UserFactory
from tests.rbac.oidc_provider import CLIENT_ID, CLIENT_SECRET, RunningProvider


@pytest.fixture
def idp(settings, redis_cache):
    """The provider, running, and Inferia configured to use it."""
    running = RunningProvider()
    settings.INFERIA_OIDC_ISSUER = running.provider.issuer
    settings.INFERIA_OIDC_CLIENT_ID = CLIENT_ID
    settings.INFERIA_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.INFERIA_OIDC_ORG_CLAIM = "org"
    settings.INFERIA_OIDC_ROLE_CLAIM = "groups"
    settings.INFERIA_OIDC_ROLE_MAP = "inferia-admins=admin, inferia-devs=member, inferia-root=superadmin"
    running.provider.claims = {
        "sub": "u-1001",
        "email": "grace@acme.test",
        "email_verified": True,
        "name": "Grace Hopper",
        "org": "acme",
        "groups": ["inferia-admins", "staff"],
    }
    yield running.provider
    running.stop()


def _sso(client, *, tamper_state: bool = False):
    """Walk the code flow: console -> provider /authorize (a real HTTP request) -> console callback."""
    start = client.get("/console/sso/start/?next=/console/security/")
    assert start.status_code == 302
    authorize = requests.get(start["Location"], allow_redirects=False, timeout=5)
    assert authorize.status_code == 302, authorize.text
    callback = urlsplit(authorize.headers["Location"])
    assert callback.path == "/console/sso/callback/"
    query = callback.query
    if tamper_state:
        params = parse_qs(query)
        query = f"code={params['code'][0]}&state=forged-state"
    return client.get(f"{callback.path}?{query}")


def test_the_login_page_offers_sso_only_when_configured(client, settings, db):
    settings.INFERIA_OIDC_ISSUER = ""
    assert b"Sign in with SSO" not in client.get("/console/login/").content
    assert client.get("/console/sso/start/").status_code == 404
    settings.INFERIA_OIDC_ISSUER = "https://idp.example.test"
    settings.INFERIA_OIDC_CLIENT_ID = "x"
    assert b"Sign in with SSO" in client.get("/console/login/").content


def test_the_code_flow_creates_the_user_with_the_mapped_membership(idp, org, roles, client):
    done = _sso(client)
    assert done.status_code == 302
    assert done["Location"] == "/console/security/"
    user = User.objects.get(email="grace@acme.test")
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session["inferia_second_factor"] == "sso"
    assert (user.full_name, user.is_superuser, user.is_staff, user.has_usable_password()) == (
        "Grace Hopper",
        False,
        False,
        False,
    )
    membership = Membership.objects.get(user=user)
    assert (membership.organization, membership.role.slug) == (org, "admin")
    assert OidcIdentity.objects.filter(user=user, issuer=idp.issuer, subject="u-1001").exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"user.create", "sso.link", "membership.create", "login.success"} <= actions
    assert AuditEvent.objects.get(action="login.success").changes["method"] == "sso"
    # PKCE was used, and the client authenticated at the token endpoint.
    assert idp.token_requests[-1]["code_verifier"]
    assert idp.token_requests[-1]["client_secret"] == CLIENT_SECRET
    assert client.get("/console/").status_code == 200


def test_a_later_sign_in_follows_the_providers_role_and_identity(idp, org, roles, client):
    _sso(client)
    client.post("/console/logout/")
    idp.claims = {**idp.claims, "email": "grace.h@acme.test", "groups": ["inferia-devs"]}
    assert _sso(client).status_code == 302
    assert User.objects.filter(email__startswith="grace").count() == 1  # found by subject, not e-mail
    assert Membership.objects.get(user__email="grace@acme.test").role.slug == "member"
    assert AuditEvent.objects.filter(action="membership.update").exists()


def test_an_unknown_organisation_gives_no_membership_unless_creation_is_allowed(idp, roles, client, settings):
    idp.claims = {**idp.claims, "org": "Initech"}
    _sso(client)
    user = User.objects.get(email="grace@acme.test")
    assert not Membership.objects.filter(user=user).exists()
    assert not Organization.objects.filter(slug="initech").exists()

    client.post("/console/logout/")
    settings.INFERIA_OIDC_CREATE_ORGS = True
    _sso(client)
    assert Membership.objects.get(user=user, organization__slug="initech").role.slug == "admin"


def test_claims_never_make_a_superadmin(idp, org, roles, client):
    idp.claims = {**idp.claims, "groups": ["inferia-root"], "is_superuser": True, "is_staff": True}
    assert _sso(client).status_code == 302
    user = User.objects.get(email="grace@acme.test")
    assert (user.is_superuser, user.is_staff) == (False, False)
    assert not Membership.objects.filter(user=user).exists()  # "superadmin" is no organisation role


def test_the_superadmin_cannot_sign_in_through_sso(idp, db, client):
    User.objects.create_superuser("grace@acme.test", "correct horse battery")
    refused = _sso(client)
    assert refused.status_code == 302
    assert refused["Location"] == "/console/login/"
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="login.failure")
    assert (event.outcome, event.changes["reason"]) == ("denied", "the superadmin signs in with a password")


def test_an_unverified_email_is_refused(idp, db, client):
    idp.claims = {**idp.claims, "email_verified": False}
    _sso(client)
    assert "_auth_user_id" not in client.session
    assert not User.objects.filter(email="grace@acme.test").exists()


def test_a_forged_state_is_refused(idp, db, client):
    refused = _sso(client, tamper_state=True)
    assert refused.status_code == 302
    assert refused["Location"] == "/console/login/"
    assert "_auth_user_id" not in client.session
    assert not User.objects.exists()
    assert AuditEvent.objects.filter(action="login.failure", changes__method="sso").exists()


def test_a_wrong_nonce_is_refused(idp, db, client):
    idp.nonce_override = "someone-elses-nonce"
    _sso(client)
    assert "_auth_user_id" not in client.session
    assert not User.objects.exists()
    assert "Nonce" in AuditEvent.objects.get(action="login.failure").changes["reason"]


def test_a_token_signed_by_another_key_is_refused(idp, db, client):
    idp.sign_with = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _sso(client)
    assert "_auth_user_id" not in client.session
    assert not User.objects.exists()
    assert AuditEvent.objects.filter(action="login.failure", changes__method="sso").exists()


def test_a_token_minted_for_another_client_is_refused(idp, db, client):
    idp.audience_override = "another-client"
    _sso(client)
    assert "_auth_user_id" not in client.session
    assert not User.objects.exists()
    assert "audience" in AuditEvent.objects.get(action="login.failure").changes["reason"].lower()


def test_sso_can_be_made_to_ask_for_the_authenticator_too(idp, org, roles, client, settings):
    settings.INFERIA_OIDC_SATISFIES_2FA = False
    user = UserFactory(email="grace@acme.test", password=None)
    enrolment = totp_enrolment_start(user=user, actor=user)
    totp = pyotp.TOTP(enrolment.secret)
    totp_enrolment_confirm(user=user, code=totp.now(), actor=user)

    step = _sso(client)
    assert step["Location"] == "/console/login/verify/"
    assert "_auth_user_id" not in client.session
    done = client.post("/console/login/verify/", {"code": totp.at(time.time() + 30)})
    assert done["Location"] == "/console/security/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.session["inferia_second_factor"] == "totp"
