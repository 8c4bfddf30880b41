"""The top bar's organisation switcher: keeps the chosen organisation in the session and goes back to the page it
was used on, showing that organisation."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from apps.console.scope import org_scope_switch

# Query parameters that belong to the organisation left behind: its choice and its pages' cursors.
_DROPPED = ("org", "older", "newer")


@login_required
@require_POST
def org_switch_view(request: HttpRequest) -> HttpResponse:
    org_scope_switch(request, request.POST.get("org", ""))
    return HttpResponseRedirect(_back_to(request, request.POST.get("next", "")))


def _back_to(request: HttpRequest, target: str) -> str:
    """`target` on this site without the dropped parameters; the console's home for anything else."""
    if not target or not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return reverse("console:home")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return reverse("console:home")
    query = QueryDict(parts.query, mutable=True)
    for name in _DROPPED:
        query.pop(name, None)
    return urlunsplit(("", "", parts.path, urlencode(list(query.lists()), doseq=True), ""))
