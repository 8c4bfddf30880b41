"""What every console template may read: the organisation context the top bar shows."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from apps.console.scope import org_scope_current


def console_org(request: HttpRequest) -> dict[str, Any]:
    """`console_org`: the page's organisation scope, worked out only when a template reads it (after the view has
    made its choice), and only for a signed-in user on a console page."""
    if not request.path_info.startswith("/console/") or not request.user.is_authenticated:
        return {}
    return {"console_org": SimpleLazyObject(lambda: org_scope_current(request))}
