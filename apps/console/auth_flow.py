"""How a console session signs in: the password (or SSO) step, the pending second step, and what the session
records about the second factor. Views and the 2FA gate share these so that there is one definition of "signed
in with two factors".

The session key is cycled when the password step passes and again by `login()`, so a session id seen before sign-in
(fixation) is worthless afterwards. A pending second step is not a sign-in: no user id is stored until the code is
right, so neither the console, the admin nor the REST API treat a half-signed-in session as authenticated.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.contrib import auth
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from apps.orgs.models import User
from apps.rbac.account_services import user_session_rekey

# How this session proved a second factor: "totp", "recovery", "sso" (the identity provider vouched), or
# "none" (password only: the user has no authenticator).
SESSION_SECOND_FACTOR = "inferia_second_factor"
SESSION_PENDING = "inferia_2fa_pending"
SECOND_FACTOR_METHODS = ("totp", "recovery")


def pending_max_age() -> int:
    """Seconds a passed password step stays good while the user fetches their code."""
    return getattr(settings, "INFERIA_2FA_PENDING_SECONDS", 300)


def safe_next(request: HttpRequest, url: str | None) -> str:
    """`url` if it stays on this site, else the console's landing page."""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return reverse("console:home")


def session_sign_in(request: HttpRequest, user: Any, *, second_factor: str) -> None:
    """Sign `user` in (Django cycles the session key) and record how the second factor was satisfied."""
    request.session.pop(SESSION_PENDING, None)
    auth.login(request, user)
    request.session[SESSION_SECOND_FACTOR] = second_factor


def session_key_cycle(request: HttpRequest, *, keep_user: Any = None) -> None:
    """Give the signed-in session a new key (after it proved something new) and keep the Security page's list of
    sessions pointing at it. With `keep_user`, the key is cycled by Django's `update_session_auth_hash`, which also
    keeps the session signed in after that user's password changed."""
    old_key = request.session.session_key
    if keep_user is not None:
        auth.update_session_auth_hash(request, keep_user)
    else:
        request.session.cycle_key()
    new_key = request.session.session_key
    if old_key and new_key and request.user.is_authenticated:
        user_session_rekey(user=request.user, old_key=old_key, new_key=new_key)


def session_second_step_begin(request: HttpRequest, user: Any, *, next_url: str) -> None:
    """The password (or SSO) step passed for a user with an authenticator: remember who, for a few minutes,
    without signing them in."""
    if request.user.is_authenticated:
        auth.logout(request)
    request.session.cycle_key()
    request.session[SESSION_PENDING] = {
        "user": user.pk,
        "backend": getattr(user, "backend", settings.AUTHENTICATION_BACKENDS[0]),
        "since": time.time(),
        "next": next_url,
        "via": "sso" if getattr(user, "backend", "").endswith("InferiaOidcBackend") else "password",
    }


def session_pending_user(request: HttpRequest) -> tuple[User, dict[str, Any]] | None:
    """The user waiting at the second step and what the first step recorded, or None when nothing is pending
    (or it expired, or the user was disabled meanwhile)."""
    pending = request.session.get(SESSION_PENDING)
    if not isinstance(pending, dict):
        return None
    if time.time() - float(pending.get("since", 0)) > pending_max_age():
        request.session.pop(SESSION_PENDING, None)
        return None
    user = User.objects.filter(pk=pending.get("user"), is_active=True).first()
    if user is None:
        return None
    user.backend = pending["backend"]
    return user, pending


def session_second_factor(request: HttpRequest) -> str | None:
    return request.session.get(SESSION_SECOND_FACTOR)
