"""The console's one organisation context: which organisation every page shows, lists, creates in and charts.

The choice is the top bar's switcher, kept in the session so that it follows the user from page to page (and through
a create form that failed validation). A page may also be opened on an organisation with `?org=<slug>` (a shared
link); that choice is kept too. An organisation the user cannot see is a 404, never a hint that it exists; a kept
choice that went away (membership ended) falls back quietly to the first organisation on offer.

Lists work on one organisation at a time so that their queries filter the organisation by equality, which is what
the (organisation, time) indexes serve: fast at any table size. Only pages that aggregate (the dashboard) offer the
superadmin the whole platform."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from django.db import models
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest

from apps.orgs.models import Membership, Organization
from apps.rbac.restrict import Principal, organizations_allowing

M = TypeVar("M", bound=models.Model)

PLATFORM = "__platform__"
SESSION_KEY = "console_org"


@dataclass(frozen=True)
class OrgScope:
    """The organisations on offer and the chosen one; `organization` is None for the platform-wide view (and for a
    user with no organisation at all)."""

    choices: list[Organization]
    organization: Organization | None
    platform: bool
    platform_offered: bool = False

    @property
    def organization_id(self) -> int | None:
        return self.organization.pk if self.organization is not None else None

    @property
    def slug(self) -> str:
        return PLATFORM if self.platform else (self.organization.slug if self.organization else "")


def organizations_visible(request: HttpRequest) -> list[Organization]:
    """The active organisations the user belongs to (every one for the superadmin), by name, once per request. A
    member whose custom role holds no organisation permission still works in it: what they see inside is
    `.restrict()`'s business, list by list."""
    cached: list[Organization] | None = getattr(request, "_console_organizations", None)
    if cached is None:
        visible = Organization.objects.restrict(Principal.of(request.user))
        belongs = Membership.objects.filter(user_id=request.user.pk).values("organization_id")
        cached = list(
            Organization.objects.filter(Q(pk__in=visible.values("pk")) | Q(pk__in=belongs))
            .filter(is_active=True)
            .order_by("name")
        )
        request._console_organizations = cached  # type: ignore[attr-defined]
    return cached


def org_scope_get(
    request: HttpRequest,
    *,
    model: type[models.Model] | None = None,
    action: str = "view",
    platform_view: bool = False,
) -> OrgScope:
    """The organisation the page shows: `?org=` (or a posted `org`), else the one kept in the session, else the
    first on offer. On offer: the organisations the user works in, or, with `model`, those where they may `action`
    its rows. `platform_view` lets the superadmin pick the whole platform (where they start). 404 for an
    organisation asked for by slug that is not on offer. An explicit choice is kept in the session."""
    who = Principal.of(request.user)
    if model is None:
        choices = organizations_visible(request)
    else:
        allowed = organizations_allowing(principal=who, action=action, model=model)
        choices = list(allowed.filter(is_active=True).order_by("name"))
    asked = request.GET.get("org") or request.POST.get("org") or ""
    kept = request.session.get(SESSION_KEY, "") if hasattr(request, "session") else ""
    offered = platform_view and who.is_superadmin
    scope = _scope_choose(choices, asked=asked, kept=kept, platform_offered=offered)
    if asked and scope.slug == asked and asked != kept and hasattr(request, "session"):
        request.session[SESSION_KEY] = asked
    request._console_scope = scope  # type: ignore[attr-defined]
    return scope


def _scope_choose(choices: list[Organization], *, asked: str, kept: str, platform_offered: bool) -> OrgScope:
    def on(organization: Organization | None, platform: bool = False) -> OrgScope:
        return OrgScope(choices, organization, platform, platform_offered)

    by_slug = {organization.slug: organization for organization in choices}
    if asked:
        if asked == PLATFORM and platform_offered:
            return on(None, platform=True)
        if asked not in by_slug:
            raise Http404("no such organisation")
        return on(by_slug[asked])
    if kept in by_slug:
        return on(by_slug[kept])
    if platform_offered and kept in (PLATFORM, ""):
        return on(None, platform=True)
    return on(choices[0] if choices else None)


def org_scope_switch(request: HttpRequest, slug: str) -> OrgScope:
    """Keep `slug` as the user's organisation (the top bar's switcher); 404 when it is not one of theirs."""
    offered = Principal.of(request.user).is_superadmin
    scope = _scope_choose(organizations_visible(request), asked=slug, kept="", platform_offered=offered)
    request.session[SESSION_KEY] = scope.slug
    return scope


def org_scope_current(request: HttpRequest) -> OrgScope:
    """The scope the page worked out (what the top bar shows), or the plain one when the page did not ask."""
    scope: OrgScope | None = getattr(request, "_console_scope", None)
    return scope if scope is not None else org_scope_get(request)


def organization_current(request: HttpRequest) -> Organization | None:
    """The organisation a list or create form works in (None when the user has none)."""
    return org_scope_get(request).organization


def organization_filter(
    request: HttpRequest, queryset: QuerySet[M], field: str = "organization_id"
) -> tuple[QuerySet[M], str]:
    """Narrow an already-restricted `queryset` to the current organisation (nothing when the user has none)."""
    current = organization_current(request)
    if current is None:
        return queryset.none(), ""
    return queryset.filter(**{field: current.pk}), current.slug
