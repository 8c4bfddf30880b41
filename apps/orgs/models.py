"""People and tenants: users, organisations, teams and the memberships that tie them together."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from inferia_runtime.tenancy import TenantManager, TenantPath

# How long an organisation may keep captured prompts and answers, in days.
CAPTURE_RETENTION_DAYS_MIN = 1
CAPTURE_RETENTION_DAYS_MAX = 90


class UserManager(BaseUserManager["User"]):
    """Creates users keyed by e-mail address."""

    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        if not email:
            raise ValueError("users need an e-mail address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in to the console or the REST API; identified by e-mail address.

    `is_superuser` is the platform superadmin, who manages every organisation.
    """

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    is_staff = models.BooleanField(default=False, help_text="May sign in to Django admin.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]
        constraints = [models.UniqueConstraint(Lower("email"), name="orgs_user_email_ci_unique")]

    def __str__(self) -> str:
        return self.email


class Organization(models.Model):
    """A tenant: it owns its teams, members, keys, policies, templates, providers, pools and deployments."""

    tenant_path = TenantPath(org="pk")

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    require_2fa = models.BooleanField(default=False, help_text="Owners and admins must use two-factor sign-in.")
    capture_prompts = models.BooleanField(
        default=False,
        help_text="Keep each request's prompt and answer (masked by the guardrails) for the request's detail page.",
    )
    capture_retention_days = models.PositiveSmallIntegerField(
        default=7,
        validators=[MinValueValidator(CAPTURE_RETENTION_DAYS_MIN), MaxValueValidator(CAPTURE_RETENTION_DAYS_MAX)],
        help_text="How many days captured prompts and answers are kept.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Team(models.Model):
    """A group inside an organisation that narrows access: deployments, keys and templates can be granted to it."""

    tenant_path = TenantPath(org="organization_id", team="pk")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="teams")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["organization__name", "name"]
        constraints = [models.UniqueConstraint(fields=["organization", "slug"], name="orgs_team_slug_unique_per_org")]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class Membership(models.Model):
    """A user's place in an organisation: one role there, and the teams they belong to."""

    tenant_path = TenantPath(org="organization_id")

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    # PROTECT: a role in use cannot disappear from under its members.
    role = models.ForeignKey("rbac.Role", on_delete=models.PROTECT, related_name="memberships")
    teams = models.ManyToManyField(Team, blank=True, related_name="memberships")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = TenantManager()

    class Meta:
        ordering = ["organization__name", "user__email"]
        constraints = [models.UniqueConstraint(fields=["user", "organization"], name="orgs_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} as {self.role}"


class Invitation(models.Model):
    """An invitation by link to join an organisation with a role (and teams); the token is stored hashed. It is the
    only way a person is added to an organisation: nobody joins without accepting."""

    tenant_path = TenantPath(org="organization_id")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.ForeignKey("rbac.Role", on_delete=models.PROTECT, related_name="+")
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    teams = models.ManyToManyField(Team, blank=True, related_name="+", help_text="Teams the member joins on accepting.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["organization", "email"])]

    def __str__(self) -> str:
        return f"{self.email} to {self.organization}"
