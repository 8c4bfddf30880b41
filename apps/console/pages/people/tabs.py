"""What the people pages share: their tabs, the organisation switcher's context, and the roles a user may hand out."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Permission
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse

from apps.console.pages.support import (
    organization_current_slug,
    organizations_visible,
    page_principal,
)
from apps.orgs.models import Membership, Organization
from apps.rbac.models import Role


def roles_visible(request: HttpRequest) -> QuerySet[Role]:
    return Role.objects.restrict(page_principal(request))


def roles_within_reach_by_org(request: HttpRequest, organizations: list[Organization]) -> dict[int, list[Role]]:
    """Per organisation, the roles the user may hand out there: built-in and that organisation's own roles whose
    every permission the user holds there (one query per organisation, not per role)."""
    principal = page_principal(request)
    reach: dict[int, list[Role]] = {}
    for organization in organizations:
        roles = roles_visible(request).filter(Q(organization__isnull=True) | Q(organization=organization))
        if not principal.is_superadmin:
            held = Membership.objects.filter(user=request.user, organization=organization).values("role__permissions")
            roles = roles.exclude(permissions__in=Permission.objects.exclude(pk__in=held))
        reach[organization.pk] = list(roles.order_by("organization_id", "name"))
    return reach


def people_tabs(request: HttpRequest, current: str) -> list[dict[str, Any]]:
    return [
        {"url": reverse(name), "label": label, "current": name == current}
        for name, label in (
            ("console:members", "Members"),
            ("console:member-invitations", "Invitations"),
            ("console:member-teams", "Teams"),
            ("console:member-roles", "Roles"),
            ("console:member-settings", "Organisation"),
        )
    ]


def people_page_context(request: HttpRequest, current: str) -> dict[str, Any]:
    return {
        "tabs": people_tabs(request, current),
        "orgs": organizations_visible(request),
        "org": organization_current_slug(request),
    }
