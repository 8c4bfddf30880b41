"""Which organisation a console page shows: the organisations the signed-in user may see a kind of row in, and the
one picked with `?org=<slug>` (the superadmin may also pick the whole platform). Every console page that shows one
organisation's data reads its choice here, so the switcher behaves the same everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import models
from django.http import Http404, HttpRequest

from apps.orgs.models import Organization
from apps.rbac.restrict import Principal, organizations_allowing

PLATFORM = "__platform__"


@dataclass(frozen=True)
class OrgScope:
    """The organisations on offer and the chosen one; `organization` is None for the platform-wide view."""

    choices: list[Organization]
    organization: Organization | None
    platform: bool

    @property
    def organization_id(self) -> int | None:
        return self.organization.pk if self.organization is not None else None

    @property
    def slug(self) -> str:
        return PLATFORM if self.platform else (self.organization.slug if self.organization else "")


def org_scope_get(request: HttpRequest, *, model: type[models.Model], action: str = "view") -> OrgScope:
    """The organisation `request` asks for (`?org=` or a form's `org`), among those where the user may `action`
    rows of `model`; the first one when none is asked for. 404 for an organisation outside them (never a hint
    that it exists). The superadmin starts on the platform-wide view. One query."""
    user: Any = request.user
    who = Principal.of(user)
    allowed = organizations_allowing(principal=who, action=action, model=model)
    choices = list(allowed.filter(is_active=True).order_by("name"))
    wanted = request.GET.get("org") or request.POST.get("org") or ""
    if who.is_superadmin and wanted in ("", PLATFORM):
        return OrgScope(choices=choices, organization=None, platform=True)
    if not wanted:
        return OrgScope(choices=choices, organization=choices[0] if choices else None, platform=False)
    for organization in choices:
        if organization.slug == wanted:
            return OrgScope(choices=choices, organization=organization, platform=False)
    raise Http404("no such organisation")
