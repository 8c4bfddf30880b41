"""The two-factor gate in front of the console and Django admin, and the record of when each session was last seen.

A signed-in session reaches a console or admin page only if it proved a second factor, or the user has no
authenticator and no organisation of theirs requires one. A session that signed in some other way while the user
has an authenticator is signed out; a user whose organisation requires two-factor is sent to enrolment first.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.contrib import auth
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from apps.console.auth_flow import SECOND_FACTOR_METHODS, session_second_factor
from apps.rbac.account_services import user_session_seen
from apps.rbac.oidc import oidc_config
from apps.rbac.twofactor_services import twofactor_enabled, twofactor_required
from inferia_runtime.client_address import client_address

GATED_PREFIXES = ("/console/", "/admin/")


class TwoFactorGateMiddleware:
    """Applies the gate to console and admin paths (after AuthenticationMiddleware)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self._gate(request) or self.get_response(request)

    def _gate(self, request: HttpRequest) -> HttpResponse | None:
        path = request.path_info
        if not path.startswith(GATED_PREFIXES) or not request.user.is_authenticated:
            return None
        if path in _open_paths():
            return None
        method = session_second_factor(request)
        if method in SECOND_FACTOR_METHODS:
            return None
        config = oidc_config()
        if method == "sso" and config is not None and config.satisfies_2fa:
            return None  # the identity provider is trusted to have asked for its own second factor
        user = request.user
        if twofactor_enabled(user=user):
            # Signed in without proving the authenticator it has (a session made elsewhere): start again.
            auth.logout(request)
            return HttpResponseRedirect(reverse("console:login") + "?" + urlencode({"next": request.get_full_path()}))
        if path not in _enrolment_paths() and twofactor_required(user=user):
            return HttpResponseRedirect(reverse("console:twofactor-enrol"))
        return None


class SessionSeenMiddleware:
    """Keeps the Security page's list of the user's sessions current: when a signed-in session asks for a console or
    admin page, its last-seen time and address are refreshed (at most once a minute; the service decides), and a
    session signed in before that list existed joins it. Runs after the gate, which may have signed it out."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(GATED_PREFIXES) and request.user.is_authenticated:
            session_key = request.session.session_key  # read after the user: loading an ended session clears it
        else:
            session_key = None
        if session_key:
            user_session_seen(
                user=request.user,
                session_key=session_key,
                user_agent=request.META.get("HTTP_USER_AGENT", ""),
                ip_address=client_address(request),
            )
        return self.get_response(request)


def _open_paths() -> set[str]:
    return {
        reverse(name)
        for name in (
            "console:login",
            "console:login-verify",
            "console:logout",
            "console:sso-start",
            "console:sso-callback",
        )
    }


def _enrolment_paths() -> set[str]:
    return {reverse(name) for name in ("console:twofactor-enrol", "console:recovery-codes")}
