"""The tenancy door every tenant model offers, `Model.objects.restrict(principal, action)`, and the declaration each
tenant model makes of where its tenant is (`tenant_path`), as NetBox's `RestrictedQuerySet` does.

This module decides nothing: rbac installs the engine that does (roles, object grants, key scopes) when the app
registry is ready. It sits below every app so that any app's models, those of orgs and audit too (below rbac), can
offer the door; a new tenant model joins by declaring its path, without being named anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from django.apps import apps
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured
from django.db import models

M = TypeVar("M", bound=models.Model)

ACTIONS = ("view", "add", "change", "delete")


class PlatformRows(StrEnum):
    """Who, besides the superadmin, may view a tenant model's platform rows (those without an organisation)."""

    PRIVATE = "private"  # nobody else
    VIEWERS = "viewers"  # who may view this model in any organisation (platform configuration tenants use)
    MEMBERS = "members"  # every member of an organisation and every key that may view (built-in vocabulary)


@dataclass(frozen=True)
class TenantPath:
    """Where a tenant model's rows belong, declared on the model as `tenant_path = TenantPath(...)`."""

    org: str  # lookup from the model to its organisation id ("pk" for Organization itself)
    team: str | None = None  # lookup to its team id, which narrows what a team key sees
    grant_via: str | None = None  # the row ("pk") or foreign key ("deployment_id") whose guardian grants count
    owner: str | None = None  # lookup to the user who owns the row: theirs while their role lets them add such rows
    shared_with: str | None = None  # platform rows shared with organisations: viewable by who may view there
    platform: PlatformRows = PlatformRows.PRIVATE
    # Rows an `inference` key may view in its organisation (knowledge that /v1 searches): data the data plane reads,
    # where every other tenant row needs a management scope.
    inference_views: bool = False


def tenant_path_of(model: type[models.Model]) -> TenantPath | None:
    """The tenant path `model` declares, or None for a model that is not tenant data."""
    path = getattr(model, "tenant_path", None)
    return path if isinstance(path, TenantPath) else None


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, or an API key (with its owner, when it has one).

    A key is any object that offers `as_principal()` (keys.ApiKey does) and, as `key`, its `organization_id`,
    `team_id`, `tenant_actions()` (the actions its scopes allow while it is usable) and `inference_actions()`.
    Here, below every app, so that a key can describe itself without importing the engine."""

    user: Any = None
    key: Any = None

    @classmethod
    def of(cls, who: Any) -> Principal:
        if isinstance(who, Principal):
            return who
        as_principal = getattr(who, "as_principal", None)
        if as_principal is not None:
            principal: Principal = as_principal()
            return principal
        if who is None or isinstance(who, AnonymousUser):
            return cls()
        return cls(user=who)

    @property
    def actor(self) -> Any:
        """Whom audit events name: the key when one was used, else the user."""
        return self.key if self.key is not None else self.user

    @property
    def is_superadmin(self) -> bool:
        return self.key is None and self.user is not None and self.user.is_active and self.user.is_superuser


class _DeclaredTenantModels(Mapping[str, TenantPath]):
    """Every installed model that declares a tenant path, by label ("keys.ApiKey"), read from the app registry on
    use (so it is complete whenever it is read, and nothing has to list the models)."""

    def _declared(self) -> dict[str, TenantPath]:
        declared = ((model._meta.label, tenant_path_of(model)) for model in apps.get_models())
        return {label: path for label, path in declared if path is not None}

    def __getitem__(self, label: str) -> TenantPath:
        return self._declared()[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self._declared())

    def __len__(self) -> int:
        return len(self._declared())


TENANT_MODELS: Mapping[str, TenantPath] = _DeclaredTenantModels()

RestrictEngine = Callable[..., models.QuerySet[Any]]
_engine: RestrictEngine | None = None


def restrict_engine_install(engine: RestrictEngine) -> None:
    """Make `engine(queryset, principal=..., action=...)` the one that `.restrict()` calls (rbac's, at startup)."""
    global _engine
    _engine = engine


class TenantQuerySet(models.QuerySet[M]):
    """A queryset of a tenant model: `.restrict(principal, action)` narrows it to the rows a user or API key may
    `view`, `add`, `change` or `delete`."""

    def restrict(self, principal: Any, action: str = "view") -> TenantQuerySet[M]:
        if _engine is None:
            raise ImproperlyConfigured("no tenancy engine is installed: apps.rbac must be in INSTALLED_APPS")
        return _engine(self, principal=principal, action=action)  # type: ignore[return-value]


TenantManager = models.Manager.from_queryset(TenantQuerySet)
