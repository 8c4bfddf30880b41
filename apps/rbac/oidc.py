"""Single sign-on through OpenID Connect (authorization code flow with PKCE, through mozilla-django-oidc).

The provider is configured by its issuer alone (endpoints come from its discovery document) plus client id and
secret. On each sign-in, `oidc_user_sync` finds the user by their identity at the issuer (`sub`), else by a
verified e-mail address, else creates them; then it maps the organisation and role claims to memberships. Claims
never make anyone a superadmin or staff, and the superadmin cannot sign in through SSO at all: an identity
provider that can assert an e-mail address must not be able to become the platform's owner.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.text import slugify
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings

from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record
from apps.orgs.models import Membership, Organization, User
from apps.orgs.services import membership_create, membership_update, organization_create
from apps.rbac.models import OidcIdentity, Role

logger = logging.getLogger(__name__)

# When claims name several roles, the strongest built-in one wins; a custom role slug ranks below them all.
ROLE_RANK = {"owner": 4, "admin": 3, "member": 2, "viewer": 1}
METADATA_CACHE_SECONDS = 3600


class OidcRefused(SuspiciousOperation):
    """A sign-in the provider vouched for but Inferia refuses (unverified e-mail, superadmin, disabled user...)."""


class OidcUnavailable(RuntimeError):
    """The provider's discovery document could not be read or does not describe the configured issuer."""


@dataclass(frozen=True)
class OidcConfig:
    """The single-sign-on settings (`INFERIA_OIDC_*`), read when needed so tests can point them elsewhere."""

    issuer: str
    client_id: str
    client_secret: str
    scopes: str = "openid email profile"
    org_claim: str = ""
    role_claim: str = ""
    role_map: dict[str, str] = field(default_factory=dict)
    default_org: str = ""
    default_role: str = ""
    create_users: bool = True
    create_orgs: bool = False
    satisfies_2fa: bool = True
    button_label: str = "Sign in with SSO"


def parse_role_map(value: str | dict[str, str]) -> dict[str, str]:
    """`"idp-admins=admin, idp-devs=member"` (or a dict) as `{claim value: role slug}`."""
    if isinstance(value, dict):
        return dict(value)
    pairs = [item.split("=", 1) for item in value.split(",") if "=" in item]
    return {claim.strip(): role.strip() for claim, role in pairs if claim.strip() and role.strip()}


def oidc_config() -> OidcConfig | None:
    """The configured provider, or None when SSO is off (no issuer or client id)."""
    issuer = getattr(settings, "INFERIA_OIDC_ISSUER", "")
    client_id = getattr(settings, "INFERIA_OIDC_CLIENT_ID", "")
    if not issuer or not client_id:
        return None
    return OidcConfig(
        issuer=issuer.rstrip("/"),
        client_id=client_id,
        client_secret=getattr(settings, "INFERIA_OIDC_CLIENT_SECRET", ""),
        scopes=getattr(settings, "INFERIA_OIDC_SCOPES", "openid email profile"),
        org_claim=getattr(settings, "INFERIA_OIDC_ORG_CLAIM", ""),
        role_claim=getattr(settings, "INFERIA_OIDC_ROLE_CLAIM", ""),
        role_map=parse_role_map(getattr(settings, "INFERIA_OIDC_ROLE_MAP", "")),
        default_org=getattr(settings, "INFERIA_OIDC_DEFAULT_ORG", ""),
        default_role=getattr(settings, "INFERIA_OIDC_DEFAULT_ROLE", ""),
        create_users=getattr(settings, "INFERIA_OIDC_CREATE_USERS", True),
        create_orgs=getattr(settings, "INFERIA_OIDC_CREATE_ORGS", False),
        satisfies_2fa=getattr(settings, "INFERIA_OIDC_SATISFIES_2FA", True),
        button_label=getattr(settings, "INFERIA_OIDC_BUTTON_LABEL", "Sign in with SSO"),
    )


def oidc_provider_metadata(config: OidcConfig) -> dict[str, Any]:
    """The issuer's discovery document (`/.well-known/openid-configuration`), cached for an hour."""
    cache_key = "oidc-meta:" + hashlib.sha256(config.issuer.encode()).hexdigest()[:32]
    metadata = cache.get(cache_key)
    if metadata is not None:
        return metadata
    url = config.issuer + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=getattr(settings, "OIDC_TIMEOUT", 10))
        response.raise_for_status()
        metadata = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise OidcUnavailable(f"cannot read {url}: {exc}") from exc
    if str(metadata.get("issuer", "")).rstrip("/") != config.issuer:
        raise OidcUnavailable("the discovery document names another issuer")
    missing = {"authorization_endpoint", "token_endpoint", "jwks_uri"} - set(metadata)
    if missing:
        raise OidcUnavailable(f"the discovery document lacks {', '.join(sorted(missing))}")
    cache.set(cache_key, metadata, timeout=METADATA_CACHE_SECONDS)
    return metadata


_DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}


def oidc_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, with the provider's endpoints from discovery and the client from
    `INFERIA_OIDC_*`, so one set of settings describes the provider."""
    config = oidc_config()
    if config is not None:
        if attr in _DISCOVERED:
            return oidc_provider_metadata(config).get(_DISCOVERED[attr], *default)
        if attr == "OIDC_RP_CLIENT_ID":
            return config.client_id
        if attr == "OIDC_RP_CLIENT_SECRET":
            return config.client_secret
        if attr == "OIDC_RP_SCOPES":
            return config.scopes
    elif attr in _DISCOVERED:
        raise ImproperlyConfigured("single sign-on is not configured (INFERIA_OIDC_ISSUER, INFERIA_OIDC_CLIENT_ID)")
    return import_from_settings(attr, *default)


def _claim_values(claims: dict[str, Any], name: str) -> list[str]:
    if not name:
        return []
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value if item not in (None, "")]
    return [str(value)] if value != "" else []


def _refuse(reason: str, *, claims: dict[str, Any], user: Any, context: AuditContext | None) -> OidcRefused:
    with transaction.atomic():
        audit_record(
            action="login.failure",
            actor=user,
            target=user,
            changes={"method": "sso", "email": str(claims.get("email", ""))[:254], "reason": reason},
            outcome=AuditEvent.Outcome.DENIED,
            context=context,
        )
    return OidcRefused(reason)


def _role_for(config: OidcConfig, claims: dict[str, Any], organization: Organization) -> Role | None:
    wanted = [config.role_map[v] for v in _claim_values(claims, config.role_claim) if v in config.role_map]
    if not wanted and config.default_role:
        wanted = [config.default_role]
    if not wanted:
        return None
    candidates = Role.objects.filter(Q(organization__isnull=True) | Q(organization=organization), slug__in=wanted)
    return max(candidates, key=lambda role: ROLE_RANK.get(role.slug, 0) if role.is_builtin else 0, default=None)


def _organizations_for(config: OidcConfig, claims: dict[str, Any], context: AuditContext | None) -> list[Organization]:
    names = _claim_values(claims, config.org_claim) or ([config.default_org] if config.default_org else [])
    organizations = []
    for name in names:
        slug = slugify(name)[:64]
        organization = Organization.objects.filter(slug=slug).first()
        if organization is None and config.create_orgs and slug:
            organization = organization_create(name=name, slug=slug, actor=None, context=context)
        if organization is not None and organization.is_active:
            organizations.append(organization)
    return organizations


def _memberships_sync(
    config: OidcConfig, claims: dict[str, Any], user: User, context: AuditContext | None
) -> list[Membership]:
    """Give the user the role the claims map to in each organisation they name. The provider is the source of
    truth for the organisations it names (a role it lowers is lowered here); others are left alone."""
    synced = []
    for organization in _organizations_for(config, claims, context):
        role = _role_for(config, claims, organization)
        if role is None:
            continue
        membership = Membership.objects.select_related("role").filter(user=user, organization=organization).first()
        if membership is None:
            membership = membership_create(organization=organization, user=user, role=role, actor=None, context=context)
        elif membership.role_id != role.pk:
            membership = membership_update(membership=membership, role=role, actor=None, context=context)
        synced.append(membership)
    return synced


def oidc_user_sync(*, config: OidcConfig, claims: dict[str, Any], context: AuditContext | None = None) -> User:
    """The user an ID token (and userinfo) from `config.issuer` stands for, created or updated from the claims,
    with memberships mapped from the organisation and role claims. Raises OidcRefused (audited) otherwise."""
    subject = str(claims.get("sub") or "")
    email = str(claims.get("email") or "").strip().lower()
    if not subject or not email:
        raise _refuse("the provider sent no subject or e-mail address", claims=claims, user=None, context=context)
    identity = OidcIdentity.objects.select_related("user").filter(issuer=config.issuer, subject=subject).first()
    user = identity.user if identity is not None else None
    if user is None:
        if claims.get("email_verified") is not True:
            raise _refuse("the provider has not verified the e-mail address", claims=claims, user=None, context=context)
        user = User.objects.filter(email__iexact=email).first()
    if user is not None and user.is_superuser:
        raise _refuse("the superadmin signs in with a password", claims=claims, user=user, context=context)
    if user is not None and not user.is_active:
        raise _refuse("the account is disabled", claims=claims, user=user, context=context)
    if user is None and not config.create_users:
        raise _refuse("no account for this e-mail address", claims=claims, user=None, context=context)
    # The refusals above are audited in their own transactions; everything below commits or fails together.
    with transaction.atomic():
        return _user_write(config, claims, user, identity, subject=subject, email=email, context=context)


def _user_write(
    config: OidcConfig,
    claims: dict[str, Any],
    user: User | None,
    identity: OidcIdentity | None,
    *,
    subject: str,
    email: str,
    context: AuditContext | None,
) -> User:
    full_name = str(claims.get("name") or "")[:200]
    if user is None:
        user = get_user_model().objects.create_user(email, password=None, full_name=full_name)
        audit_record(
            action="user.create",
            actor=None,
            target=user,
            changes={"email": email, "source": "sso", "issuer": config.issuer},
            context=context,
        )
    elif full_name and user.full_name != full_name:
        user.full_name = full_name
        user.save(update_fields=["full_name"])
    if identity is None:
        identity = OidcIdentity.objects.create(user=user, issuer=config.issuer, subject=subject)
        audit_record(
            action="sso.link",
            actor=None,
            target=user,
            changes={"issuer": config.issuer, "subject": subject},
            context=context,
        )
    identity.last_login_at = timezone.now()
    identity.save(update_fields=["last_login_at"])
    _memberships_sync(config, claims, user, context)
    return user


class InferiaOidcBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's code-flow backend, answering only the SSO callback (which passes a nonce), with the
    provider from discovery, the ID token's issuer, audience and expiry checked, and users from `oidc_user_sync`."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Every password sign-in instantiates every backend: read the provider only when a callback arrives.
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or "nonce" not in kwargs or "password" in kwargs:
            return None
        config = oidc_config()
        if config is None:
            return None
        self.config = config
        super().__init__()
        return super().authenticate(request, **kwargs)

    def _verify_jws(self, payload: Any, key: Any) -> dict[str, Any]:
        header = jwt.get_unverified_header(payload)
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation("the ID token is signed with another algorithm")
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.config.client_id,
                issuer=self.config.issuer,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
                leeway=getattr(settings, "INFERIA_OIDC_CLOCK_SKEW_SECONDS", 60),
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"the ID token is not valid: {exc}") from exc

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        userinfo = self.get_userinfo(access_token, id_token, payload) if self.OIDC_OP_USER_ENDPOINT else {}
        if userinfo and userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("userinfo describes someone other than the ID token")
        claims = {**userinfo, **payload}
        try:
            return oidc_user_sync(config=self.config, claims=claims, context=AuditContext.from_request(self.request))
        except OidcRefused as exc:
            self.request.inferia_sso_refusal = str(exc)  # type: ignore[union-attr]  # for the callback's message
            raise
