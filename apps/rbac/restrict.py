"""The tenancy engine behind every tenant model's `Model.objects.restrict(principal, action)`: it narrows a queryset to
the rows a user or an API key may see (`view`) or touch (`add`, `change`, `delete`). Every API view, admin changelist
and console page goes through that door; nothing reads tenant data with a bare `.objects.get(pk=...)`.

It names no model: each tenant model declares its `tenant_path` (inferia_runtime.tenancy), which says where its
organisation, team, guardian grants, owner and platform rows are. rbac installs this engine when the app registry is
ready (apps.RbacConfig).

How the pieces combine (one SQL query, subqueries only):
1. Superadmin (`is_superuser`, signing in as a person): everything, platform-owned rows included.
2. Roles: a membership's role holds Django model permissions (`view_modeldeployment`, ...). Holding one in an
   organisation grants that action on every row of that model in that organisation.
3. Object grants (django-guardian), on deployments, pools, providers, keys and prompt templates: a user, or a
   team through its guardian group (`rbac.TeamGroup`), may hold a permission on one object. A grant counts only
   while the user is a member of the object's organisation, so removing a member ends every grant at once.
4. Owned rows (`owner`): a member may see and change the rows they own (their keys) while their role lets them
   add such rows there.
5. Platform rows (no organisation): one shared with an organisation (`shared_with`, deployments) is visible to who
   may view the model there; `PlatformRows.MEMBERS` rows (built-in roles) to every member, `PlatformRows.VIEWERS`
   rows (platform guardrail profiles) to who may view the model somewhere. Other platform rows are the
   superadmin's alone.
6. API keys: `read` allows view, `manage` allows view and changes; a key never leaves its organisation.
   `inference` allows view of the models that declare `inference_views` (knowledge that /v1 searches).
   A key owned by a user has at most its owner's rights there (so it dies with the membership); a service key
   (no owner) has every right its scopes allow within its organisation. A team key sees only its team's keys,
   usage and team.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ImproperlyConfigured
from django.db import models
from django.db.models import BigIntegerField, Exists, Q, QuerySet
from django.db.models.functions import Cast
from guardian.models import GroupObjectPermission, UserObjectPermission

from apps.orgs.models import Membership, Organization, User
from inferia_runtime.tenancy import ACTIONS, TENANT_MODELS, PlatformRows, Principal, TenantPath, tenant_path_of

__all__ = [
    "TENANT_MODELS",
    "Principal",
    "organizations_allowing",
    "principal_can",
    "queryset_restrict",
    "role_within_reach",
]

M = TypeVar("M", bound=models.Model)


def _tenant_path(model: type[models.Model]) -> TenantPath:
    path = tenant_path_of(model)
    if path is None:
        raise ImproperlyConfigured(f"{model._meta.label} declares no tenant_path: it is not a tenant model")
    return path


def _codename(action: str, model: type[models.Model]) -> str:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return f"{action}_{model._meta.model_name}"


def _key_allows(key: Any, action: str, model: type[models.Model]) -> bool:
    if action in key.tenant_actions():
        return True
    return action == "view" and _tenant_path(model).inference_views and bool(key.inference_actions())


def organizations_allowing(*, principal: Any, action: str, model: type[models.Model]) -> QuerySet[Organization]:
    """The organisations in which `principal` holds `action` on every row of `model` (role-wide, not per object).

    What a create checks: may this user or key add a team, key, deployment, ... in that organisation?"""
    who = Principal.of(principal)
    codename = _codename(action, model)
    if who.is_superadmin:
        return Organization.objects.all()
    if who.key is not None:
        if not _key_allows(who.key, action, model):
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


def _granted_pks(user: User, codename: str, grant_model: type[models.Model]) -> Q:
    """Rows granted by django-guardian to the user, or to a team group of theirs. Guardian stores object ids as
    text; the cast keeps the comparison in SQL."""
    ct = ContentType.objects.get_for_model(grant_model)
    to_user = UserObjectPermission.objects.filter(user=user, content_type=ct, permission__codename=codename).annotate(
        object_id=Cast("object_pk", BigIntegerField())
    )
    to_team = GroupObjectPermission.objects.filter(
        group__inferia_team__team__memberships__user=user, content_type=ct, permission__codename=codename
    ).annotate(object_id=Cast("object_pk", BigIntegerField()))
    return Q(pk__in=to_user.values("object_id")) | Q(pk__in=to_team.values("object_id"))


def queryset_restrict(queryset: QuerySet[M], *, principal: Any, action: str) -> QuerySet[M]:
    """`queryset` narrowed to the rows `principal` (a user, an ApiKey or a Principal) may `action`: the engine
    behind every tenant model's `.restrict(principal, action)`, which is what callers use.

    See the module docstring for how roles, guardian grants, owned rows, platform rows and key scopes combine; the
    model's `tenant_path` says where each of them is found."""
    model = queryset.model
    path = _tenant_path(model)
    _codename(action, model)
    who = Principal.of(principal)
    if who.is_superadmin:
        return queryset
    if who.key is None and who.user is None:
        return queryset.none()
    if who.key is not None and not _key_allows(who.key, action, model):
        return queryset.none()
    orgs = organizations_allowing(principal=who, action=action, model=model)
    allowed = Q(**{f"{path.org}__in": orgs.values("pk")})

    person = who.user if who.user is not None and who.user.is_active and not who.user.is_superuser else None
    if person is not None:
        if path.grant_via is not None:
            allowed |= _granted(model, path.grant_via, person, action) & Q(**{f"{path.org}__in": _member_orgs(who)})
        if path.owner is not None:
            may_own = organizations_allowing(principal=who, action="add", model=model)
            allowed |= Q(**{path.owner: person, f"{path.org}__in": may_own.values("pk")})
    if action == "view":
        allowed |= _platform_rows_viewable(model, path, who, person, orgs)

    restricted = queryset.filter(allowed)
    if who.key is not None and who.key.team_id is not None and path.team is not None:
        restricted = restricted.filter(**{path.team: who.key.team_id})
    return restricted


def _platform_rows_viewable(
    model: type[models.Model], path: TenantPath, who: Principal, person: User | None, orgs: QuerySet[Organization]
) -> Q:
    """The platform rows (no organisation) `who` may view besides the superadmin; `orgs` are where they may view
    the model."""
    platform = Q(**{f"{path.org}__isnull": True})
    allowed = Q()
    if path.shared_with is not None:
        shared = model._default_manager.filter(platform, **{f"{path.shared_with}__in": orgs.values("pk")})
        allowed |= Q(pk__in=shared.values("pk"))
    if path.platform == PlatformRows.VIEWERS:
        allowed |= platform & Q(Exists(orgs))
    elif path.platform == PlatformRows.MEMBERS:
        if who.key is not None:
            allowed |= platform
        elif person is not None:
            allowed |= platform & Q(Exists(Membership.objects.filter(user=person)))
    return allowed


def _granted(model: type[models.Model], grant_via: str, person: User, action: str) -> Q:
    """Rows granted to `person` through the object that carries their guardian grants (the row, or what its
    `grant_via` foreign key points at)."""
    if grant_via == "pk":
        return _granted_pks(person, _codename(action, model), model)
    target = model._meta.get_field(grant_via.removesuffix("_id")).related_model
    granted = _granted_pks(person, _codename(action, target), target)
    return Q(**{f"{grant_via}__in": target._default_manager.filter(granted).values("pk")})


def principal_can(*, principal: Any, action: str, obj: models.Model) -> bool:
    """Whether `principal` may `action` this one object: the same door, asked about a single row."""
    return queryset_restrict(type(obj)._default_manager.filter(pk=obj.pk), principal=principal, action=action).exists()


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
