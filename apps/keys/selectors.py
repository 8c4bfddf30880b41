"""Reading API keys: the lookup the gateway falls back to when a key is in neither of its caches."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Q
from django.utils import timezone

from apps.keys.models import ApiKey


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who a presented key speaks for, as the data plane needs it: small, immutable and cacheable as JSON.

    `expires_at` is a POSIX timestamp (or None) so that a cached principal can be checked without the database.
    `capture` says that the organisation opted in to keeping prompts and answers (the gateway then puts them on the
    usage event; a principal cached by an earlier release reads as not capturing).
    """

    key_id: int
    prefix: str
    organization_id: int
    organization_slug: str
    team_id: int | None
    scopes: frozenset[str]
    allowed_models: tuple[str, ...]
    expires_at: float | None
    capture: bool = False
    allowed_vector_stores: tuple[str, ...] = ()

    def as_json_dict(self) -> dict[str, object]:
        """The form kept in Redis (see `from_json_dict`)."""
        return {
            "key_id": self.key_id,
            "prefix": self.prefix,
            "organization_id": self.organization_id,
            "organization_slug": self.organization_slug,
            "team_id": self.team_id,
            "scopes": sorted(self.scopes),
            "allowed_models": list(self.allowed_models),
            "expires_at": self.expires_at,
            "capture": self.capture,
            "allowed_vector_stores": list(self.allowed_vector_stores),
        }

    @classmethod
    def from_json_dict(cls, data: dict[str, object]) -> KeyPrincipal:
        return cls(
            key_id=int(data["key_id"]),  # type: ignore[call-overload]
            prefix=str(data["prefix"]),
            organization_id=int(data["organization_id"]),  # type: ignore[call-overload]
            organization_slug=str(data["organization_slug"]),
            team_id=int(data["team_id"]) if data.get("team_id") is not None else None,  # type: ignore[call-overload]
            scopes=frozenset(str(scope) for scope in data["scopes"]),  # type: ignore[attr-defined]
            allowed_models=tuple(data["allowed_models"]),  # type: ignore[arg-type]
            expires_at=float(data["expires_at"]) if data.get("expires_at") is not None else None,  # type: ignore[arg-type]
            capture=data.get("capture") is True,
            allowed_vector_stores=tuple(data.get("allowed_vector_stores") or ()),  # type: ignore[arg-type]
        )


def api_key_principal_get(*, secret_hash: str) -> KeyPrincipal | None:
    """The principal of the usable key with this hash: not revoked, not expired, in an active organisation.

    None for anything else, so that callers can cache the miss without telling the reasons apart.
    """
    now = timezone.now()
    key = (
        ApiKey.objects.filter(secret_hash=secret_hash, organization__is_active=True)
        .filter(Q(revoked_at__isnull=True) | Q(revoked_at__gt=now))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .select_related("organization")
        .only(
            "id",
            "prefix",
            "organization__id",
            "organization__slug",
            "organization__capture_prompts",
            "team_id",
            "scopes",
            "allowed_models",
            "allowed_vector_stores",
            "expires_at",
            "revoked_at",
        )
        .first()
    )
    if key is None:
        return None
    # A revocation scheduled for later behaves like an expiry for the caches.
    ends = [moment for moment in (key.expires_at, key.revoked_at) if moment is not None]
    return KeyPrincipal(
        key_id=key.pk,
        prefix=key.prefix,
        organization_id=key.organization.pk,
        organization_slug=key.organization.slug,
        team_id=key.team_id,
        scopes=frozenset(key.scopes),
        allowed_models=tuple(key.allowed_models),
        allowed_vector_stores=tuple(key.allowed_vector_stores),
        expires_at=min(ends).timestamp() if ends else None,
        capture=key.organization.capture_prompts,
    )
