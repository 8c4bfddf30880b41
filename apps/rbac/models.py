"""Roles: named sets of permissions a membership grants inside one organisation."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.db import models
from django.db.models import Q

from inferia_runtime.tenancy import PlatformRows, TenantManager, TenantPath


class Role(models.Model):
    """A set of permissions. Built-in roles (owner, admin, member, viewer) have no organisation;
    custom roles belong to the organisation whose owner composed them."""

    tenant_path = TenantPath(org="organization_id", platform=PlatformRows.MEMBERS)

    organization = models.ForeignKey(
        "orgs.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="roles"
    )
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_builtin = models.BooleanField(default=False)
    permissions = models.ManyToManyField(Permission, blank=True, related_name="inferia_roles")

    objects = TenantManager()

    class Meta:
        ordering = ["organization_id", "slug"]
        constraints = [
            models.UniqueConstraint(
                fields=["slug"], condition=Q(organization__isnull=True), name="rbac_role_builtin_slug_unique"
            ),
            models.UniqueConstraint(
                fields=["organization", "slug"],
                condition=Q(organization__isnull=False),
                name="rbac_role_slug_unique_per_org",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class TeamGroup(models.Model):
    """The django-guardian group that stands for a team: object grants to a team (delegating one deployment,
    key, pool or provider to it) are guardian group permissions on this group. Created on first grant."""

    team = models.OneToOneField("orgs.Team", on_delete=models.CASCADE, related_name="guardian_group")
    group = models.OneToOneField("auth.Group", on_delete=models.CASCADE, related_name="inferia_team")

    def __str__(self) -> str:
        return f"group of {self.team_id}"


class TotpDevice(models.Model):
    """A user's authenticator app (TOTP, RFC 6238). Unconfirmed until the user proves it with one valid code;
    only a confirmed device makes sign-in ask for a code. The shared secret is kept MultiFernet-encrypted."""

    user = models.OneToOneField("orgs.User", on_delete=models.CASCADE, related_name="totp_device")
    secret_encrypted = models.TextField(editable=False, help_text="MultiFernet token of the base32 secret.")
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # The time step of the last accepted code: a code is good once, even within its 30-second window.
    last_used_step = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"authenticator of {self.user_id}"

    @property
    def is_confirmed(self) -> bool:
        return self.confirmed_at is not None


class RecoveryCode(models.Model):
    """A single-use code that stands in for a TOTP code when the authenticator is lost; stored as a hash, shown
    to the user once when issued."""

    user = models.ForeignKey("orgs.User", on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["user"], condition=Q(used_at__isnull=True), name="rbac_recovery_unused")]

    def __str__(self) -> str:
        return f"recovery code of {self.user_id}"


class OidcIdentity(models.Model):
    """Links a user to their identity (`sub`) at an OpenID Connect issuer, so later sign-ins find them even if
    their e-mail address changes at the provider."""

    user = models.ForeignKey("orgs.User", on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="rbac_oidc_identity_unique")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class UserSession(models.Model):
    """One signed-in console session of a user, so that the Security page can list where they are signed in and end
    a session. The session key itself is never stored in clear: its SHA-256 digest finds the row of the request at
    hand, and a MultiFernet token of it lets the owner end that session in the session store."""

    user = models.ForeignKey("orgs.User", on_delete=models.CASCADE, related_name="console_sessions")
    key_digest = models.CharField(max_length=64, unique=True)
    key_encrypted = models.TextField(editable=False, help_text="MultiFernet token of the session key.")
    user_agent = models.CharField(max_length=300, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()

    class Meta:
        # Personal: each person sees and ends only their own sessions (account services), so no role may grant a
        # permission on them.
        default_permissions = ()
        indexes = [models.Index(fields=["user", "-last_seen_at"], name="rbac_usersession_recent")]

    def __str__(self) -> str:
        return f"session of {self.user_id}"
