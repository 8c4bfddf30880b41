"""Keeps the index of signed-in sessions (`UserSession`, apps/rbac/account_services.py) in step with Django's own
sign-in and sign-out. Django's `login()` and `logout()` are the one place every way in and out passes (the console's
forms, SSO, the gate signing a session out, the test client's `force_login`), so the index follows them here; what a
sign-in means (throttling, the second factor, the audit trail) stays in the views and services."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver
from django.http import HttpRequest

from apps.rbac.account_services import user_session_forget, user_session_register
from inferia_runtime.client_address import client_address


@receiver(user_logged_in, dispatch_uid="rbac_user_session_signed_in")
def _session_signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if request is None or session is None:
        return
    if session.session_key is None:
        session.save()
    user_session_register(
        user=user,
        session_key=str(session.session_key),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
        ip_address=client_address(request),
    )


@receiver(user_logged_out, dispatch_uid="rbac_user_session_signed_out")
def _session_signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if session_key:
        user_session_forget(session_key=session_key)
