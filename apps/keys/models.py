"""API keys: the credentials applications and scripts present to `/v1` and the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import ProtectedError, Q, QuerySet
from django.db.models.deletion import Collector
from django.utils import timezone

from inferia_runtime.tenancy import ACTIONS, Principal, TenantManager, TenantPath


class Scope(models.TextChoices):
    """What a key may be used for."""

    INFERENCE = "inference", "Inference on /v1"
    READ = "read", "Read the management API"
    MANAGE = "manage", "Change things through the management API"


def still_working() -> Q:
    """Keys not yet revoked: never revoked, or rotated with a revocation still ahead (the grace period)."""
    return Q(revoked_at__isnull=True) | Q(revoked_at__gt=timezone.now())


def team_keys_on_delete(collector: Collector, field: models.Field, sub_objs: QuerySet[Any], using: str) -> None:
    """What deleting a team does to its keys. A key that still works (unrevoked, or in a rotation's grace period)
    protects the team: losing the team would silently widen a team key to the whole organisation. Revoked keys
    grant nothing, and let go of it."""
    live = list(sub_objs.filter(still_working()))
    if live:
        raise ProtectedError("a live API key is bound to the team", set(live))
    models.SET_NULL(collector, field, sub_objs, using)


# What each scope lets a key do through the management API's tenancy door (`.restrict()`); `inference` lets it do
# nothing there.
SCOPE_ACTIONS: dict[str, frozenset[str]] = {
    Scope.READ: frozenset({"view"}),
    Scope.MANAGE: frozenset(ACTIONS),
}


PURPOSE_APPLICATION_NAME = "application"


def purpose_refusal(purpose: str) -> str:
    """Why a person may not ask for a key of `purpose` (the REST API's and the console's words alike)."""
    return (
        f"Keys with purpose '{purpose}' are issued by Inferia itself (a vector store's own key, the console "
        f"playground's); create an '{PURPOSE_APPLICATION_NAME}' key instead."
    )


class ApiKey(models.Model):
    """A key shown once at creation and stored only as its SHA-256 hash, with a visible prefix.

    A key owned by a user has at most its owner's rights, intersected with its scopes; a service key
    (no owner) has only its scopes within its organisation (and its team, when it has one).
    """

    tenant_path = TenantPath(org="organization_id", team="team_id", grant_via="pk", owner="owner")

    class Purpose(models.TextChoices):
        """What issued the key, when not a person for an application: the key list marks such keys for what they
        are, whatever their name says."""

        APPLICATION = "", "An application's key"
        PLAYGROUND = "playground", "Used by the console playground"
        KNOWLEDGE = "knowledge", "A vector store's own key"

    organization = models.ForeignKey("orgs.Organization", on_delete=models.CASCADE, related_name="api_keys")
    team = models.ForeignKey("orgs.Team", on_delete=team_keys_on_delete, null=True, blank=True, related_name="api_keys")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="api_keys"
    )
    name = models.CharField(max_length=200)
    purpose = models.CharField(max_length=16, choices=Purpose.choices, blank=True, default=Purpose.APPLICATION)
    prefix = models.CharField(max_length=24, unique=True, help_text="The visible start of the key.")
    secret_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the whole key, hex.")
    scopes = ArrayField(models.CharField(max_length=32, choices=Scope.choices), default=list)
    allowed_models = ArrayField(models.CharField(max_length=200), default=list, blank=True)
    allowed_vector_stores = ArrayField(
        models.CharField(max_length=40),
        default=list,
        blank=True,
        help_text="The vector stores (vs_...) the key may search; empty: every store of its organisation.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    end_recorded_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When the audit log recorded that the key stopped working."
    )
    rotated_from = models.OneToOneField(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="rotated_to"
    )

    objects = TenantManager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["expires_at"], condition=Q(revoked_at__isnull=True), name="keys_active_expiry_idx"),
            models.Index(
                fields=["expires_at", "revoked_at"], condition=Q(end_recorded_at__isnull=True), name="keys_end_due_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def purpose_name(self) -> str:
        """The purpose as the API and the CLI name it: an application's key is stored as "" but listed by name."""
        return self.purpose or PURPOSE_APPLICATION_NAME

    def is_usable(self, now: datetime | None = None) -> bool:
        """Whether the key may authenticate right now (not revoked, not expired)."""
        moment = now or timezone.now()
        if self.revoked_at is not None and self.revoked_at <= moment:
            return False
        return self.expires_at is None or self.expires_at > moment

    def tenant_actions(self) -> frozenset[str]:
        """The actions this key's scopes allow it on tenant data right now: none once revoked or expired."""
        if not self.is_usable():
            return frozenset()
        return frozenset().union(*(SCOPE_ACTIONS.get(scope, frozenset()) for scope in self.scopes))

    def inference_actions(self) -> frozenset[str]:
        """What the `inference` scope allows on tenant rows that /v1 reads (`TenantPath.inference_views`): view,
        while the key is usable."""
        return frozenset({"view"}) if Scope.INFERENCE in self.scopes and self.is_usable() else frozenset()

    def as_principal(self) -> Principal:
        """The key as the tenancy engine sees it: the key itself, with at most its owner's rights (when owned)."""
        return Principal(user=self.owner if self.owner_id else None, key=self)
