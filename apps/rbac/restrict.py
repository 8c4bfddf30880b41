"""The one tenancy door: `restrict(queryset, principal=..., action=...)` narrows any tenant queryset to the rows a
user or an API key may see (`view`) or touch (`add`, `change`, `delete`). Every API view, admin changelist and
console page goes through it; nothing reads tenant data with a bare `.objects.get(pk=...)`.

How the pieces combine (one SQL query, subqueries only):
1. Superadmin (`is_superuser`, signing in as a person): everything, platform-owned rows included.
2. Roles: a membership's role holds Django model permissions (`view_modeldeployment`, ...). Holding one in an
   organisation grants that action on every row of that model in that organisation.
3. Object grants (django-guardian), on deployments, pools, providers, keys and prompt templates: a user, or a
   team through its guardian group (`rbac.TeamGroup`), may hold a permission on one object. A grant counts only
   while the user is a member of the object's organisation, so removing a member ends every grant at once.
4. Own keys: a member may see and revoke the keys they own while their role lets them create keys.
5. Platform rows: a platform deployment shared with an organisation is visible to who may view deployments
   there; built-in roles are visible to every member, platform guardrail profiles to who may view profiles
   somewhere. Other platform rows are the superadmin's alone.
6. API keys: `read` allows view, `manage` allows view and changes; a key never leaves its organisation.
   A key owned by a user has at most its owner's rights there (so it dies with the membership); a service key
   (no owner) has every right its scopes allow within its organisation. A team key sees only its team's keys,
   usage and team.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import BigIntegerField, Exists, Q, QuerySet
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermission, UserObjectPermission

from apps.audit.actors import Actor
from apps.keys.models import ApiKey, Scope
from apps.orgs.models import Membership, Organization, User

M = TypeVar("M", bound=models.Model)

ACTIONS = ("view", "add", "change", "delete")
SCOPE_ACTIONS: dict[str, frozenset[str]] = {
    Scope.READ: frozenset({"view"}),
    Scope.MANAGE: frozenset(ACTIONS),
}


@dataclass(frozen=True)
class TenantPath:
    """How to find a tenant model's organisation, team, and the object that carries guardian grants."""

    org: str  # lookup from the model to its organisation id ("pk" for Organization itself)
    team: str | None = None  # lookup to its team id, for narrowing team keys
    grant_via: str | None = None  # lookup to the object that carries guardian grants ("pk": the row itself)
    grant_model: str | None = None  # that object's model label


TENANT_MODELS: dict[str, TenantPath] = {
    "orgs.Organization": TenantPath(org="pk"),
    "orgs.Team": TenantPath(org="organization_id", team="pk"),
    "orgs.Membership": TenantPath(org="organization_id"),
    "orgs.Invitation": TenantPath(org="organization_id"),
    "rbac.Role": TenantPath(org="organization_id"),
    "keys.ApiKey": TenantPath(org="organization_id", team="team_id", grant_via="pk", grant_model="keys.ApiKey"),
    "compute.Provider": TenantPath(org="organization_id", grant_via="pk", grant_model="compute.Provider"),
    "compute.ComputePool": TenantPath(org="organization_id", grant_via="pk", grant_model="compute.ComputePool"),
    "compute.ModelDeployment": TenantPath(org="organization_id", grant_via="pk", grant_model="compute.ModelDeployment"),
    "compute.Replica": TenantPath(
        org="deployment__organization_id", grant_via="deployment_id", grant_model="compute.ModelDeployment"
    ),
    "audit.AuditEvent": TenantPath(org="organization_id"),
    "usage.UsageRecord": TenantPath(org="organization_id", team="team_id"),
    "usage.UsageRollup": TenantPath(org="organization_id", team="team_id"),
    "usage.UsageModelRollup": TenantPath(org="organization_id", team="team_id"),
    "usage.UsageKeyRollup": TenantPath(org="organization_id", team="team_id"),
    "policies.Policy": TenantPath(org="organization_id", team="team_id"),
    "policies.GuardrailProfile": TenantPath(org="organization_id"),
    "policies.PromptTemplate": TenantPath(org="organization_id", grant_via="pk", grant_model="policies.PromptTemplate"),
    "policies.PromptTemplateVersion": TenantPath(
        org="template__organization_id", grant_via="template_id", grant_model="policies.PromptTemplate"
    ),
}


@dataclass(frozen=True)
class Principal:
    """Who is asking: a signed-in user, or an API key (with its owner, when it has one)."""

    user: Any = None
    key: ApiKey | None = None

    @classmethod
    def of(cls, who: Any) -> Principal:
        if isinstance(who, Principal):
            return who
        if isinstance(who, ApiKey):
            return cls(user=who.owner if who.owner_id else None, key=who)
        if who is None or isinstance(who, AnonymousUser):
            return cls()
        return cls(user=who)

    @property
    def actor(self) -> Actor:
        """Whom audit events name: the key when one was used, else the user."""
        return self.key if self.key is not None else self.user

    @property
    def is_superadmin(self) -> bool:
        return self.key is None and self.user is not None and self.user.is_active and self.user.is_superuser


def _tenant_path(model: type[models.Model]) -> TenantPath:
    try:
        return TENANT_MODELS[model._meta.label]
    except KeyError:
        raise ImproperlyConfigured(f"{model._meta.label} is not a tenant model known to restrict()") from None


def _codename(action: str, model: type[models.Model]) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return f"{action}_{model._meta.model_name}"


def _key_usable(key: ApiKey, action: str) -> bool:
    if not key.is_usable():
        return False
    allowed = set().union(*(SCOPE_ACTIONS.get(scope, frozenset()) for scope in key.scopes))
    return action in allowed


def organizations_allowing(*, principal: Any, action: str, model: type[models.Model]) -> QuerySet[Organization]:
    """The organisations in which `principal` holds `action` on every row of `model` (role-wide, not per object).

    What a create checks: may this user or key add a team, key, deployment, ... in that organisation?"""
    who = Principal.of(principal)
    codename = _codename(action, model)
    if who.is_superadmin:
        return Organization.objects.all()
    if who.key is not None:
        if not _key_usable(who.key, action):
            return Organization.objects.none()
        in_key_org = Organization.objects.filter(pk=who.key.organization_id, is_active=True)
        if who.user is None:
            return in_key_org
        if not who.user.is_active:
            return Organization.objects.none()
        if who.user.is_superuser:
            return in_key_org
        return in_key_org.filter(pk__in=_role_orgs(who.user, codename, model))
    if who.user is None or not who.user.is_active:
        return Organization.objects.none()
    return Organization.objects.filter(pk__in=_role_orgs(who.user, codename, model))


def _role_orgs(user: User, codename: str, model: type[models.Model]) -> QuerySet[Any]:
    ct = ContentType.objects.get_for_model(model)
    return Membership.objects.filter(
        user=user, role__permissions__codename=codename, role__permissions__content_type=ct
    ).values("organization_id")


def _member_orgs(who: Principal) -> QuerySet[Any]:
    orgs = Membership.objects.filter(user=who.user)
    if who.key is not None:
        orgs = orgs.filter(organization_id=who.key.organization_id)
    return orgs.values("organization_id")


def _granted_pks(user: User, codename: str, grant_model: str) -> Q:
    """Rows granted by django-guardian to the user, or to a team group of theirs. Guardian stores object ids as
    text; the cast keeps the comparison in SQL."""
    app_label, model_name = grant_model.lower().split(".")
    ct = ContentType.objects.get_by_natural_key(app_label, model_name)
    to_user = UserObjectPermission.objects.filter(user=user, content_type=ct, permission__codename=codename).annotate(
        object_id=Cast("object_pk", BigIntegerField())
    )
    to_team = GroupObjectPermission.objects.filter(
        group__inferia_team__team__memberships__user=user, content_type=ct, permission__codename=codename
    ).annotate(object_id=Cast("object_pk", BigIntegerField()))
    return Q(pk__in=to_user.values("object_id")) | Q(pk__in=to_team.values("object_id"))


def restrict(queryset: QuerySet[M], *, principal: Any, action: str) -> QuerySet[M]:
    """`queryset` narrowed to the rows `principal` (a user, an ApiKey or a Principal) may `action`.

    See the module docstring for how roles, guardian grants, own keys, shared rows and key scopes combine."""
    model = queryset.model
    path = _tenant_path(model)
    _codename(action, model)
    who = Principal.of(principal)
    if who.is_superadmin:
        return queryset
    if who.key is None and who.user is None:
        return queryset.none()
    if who.key is not None and not _key_usable(who.key, action):
        return queryset.none()
    orgs = organizations_allowing(principal=who, action=action, model=model)
    allowed = Q(**{f"{path.org}__in": orgs.values("pk")})

    person = who.user if who.user is not None and who.user.is_active and not who.user.is_superuser else None
    if person is not None:
        if path.grant_via is not None and path.grant_model is not None:
            granted = _granted(model, path.grant_via, path.grant_model, person, action)
            allowed |= granted & Q(**{f"{path.org}__in": _member_orgs(who)})
        if model is ApiKey:
            may_keep_keys = organizations_allowing(principal=who, action="add", model=ApiKey)
            allowed |= Q(owner=person, organization_id__in=may_keep_keys.values("pk"))
    if action == "view" and model._meta.label == "compute.ModelDeployment":
        shared = model._default_manager.filter(organization__isnull=True, shared_with__in=orgs.values("pk"))
        allowed |= Q(pk__in=shared.values("pk"))
    if action == "view" and model._meta.label == "policies.GuardrailProfile":
        # Platform guardrail profiles are for every organisation's policies to use: who may view profiles in an
        # organisation may read them (their content is platform configuration, not any tenant's data).
        allowed |= Q(organization__isnull=True) & Q(Exists(orgs))
    if action == "view" and model._meta.label == "rbac.Role":
        # Built-in roles are platform rows every member (and every key) may read, to know what roles mean.
        if who.key is not None:
            allowed |= Q(organization__isnull=True)
        elif person is not None:
            allowed |= Q(organization__isnull=True) & Q(Exists(Membership.objects.filter(user=person)))

    restricted = queryset.filter(allowed)
    if who.key is not None and who.key.team_id is not None and path.team is not None:
        restricted = restricted.filter(**{path.team: who.key.team_id})
    return restricted


def _granted(model: type[models.Model], grant_via: str, grant_model: str, person: User, action: str) -> Q:
    grant_codename = f"{action}_{grant_model.split('.')[1].lower()}"
    granted = _granted_pks(person, grant_codename, grant_model)
    if grant_via == "pk":
        return granted
    target = model._meta.get_field(grant_via.removesuffix("_id")).related_model
    return Q(**{f"{grant_via}__in": target._default_manager.filter(granted).values("pk")})


def principal_can(*, principal: Any, action: str, obj: models.Model) -> bool:
    """Whether `principal` may `action` this one object: the same door, asked about a single row."""
    return restrict(type(obj)._default_manager.filter(pk=obj.pk), principal=principal, action=action).exists()


def role_within_reach(*, principal: Any, role: Any, organization: Organization) -> bool:
    """Whether `principal` may hand `role` to someone in `organization`: only roles whose every permission the
    principal holds there themselves (an admin cannot make anyone, themselves included, an owner)."""
    who = Principal.of(principal)
    if who.is_superadmin or (who.key is not None and who.user is None):
        return True  # the superadmin holds everything; a service key's reach is its scopes, checked by restrict
    if who.user is None or not who.user.is_active:
        return False
    if who.user.is_superuser:
        return True
    held = Membership.objects.filter(user=who.user, organization=organization).values("role__permissions")
    return not role.permissions.exclude(pk__in=held).exists()
