"""The Security page: two-factor sign-in's state, changing one's password, and the sessions one is signed in with
(each can be signed out, or all but this one). Each view parses the form, calls one service and redirects back."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from ua_parser import parse as user_agent_parse

from apps.audit.services import AuditContext
from apps.console.auth_flow import session_key_cycle
from apps.rbac.account_services import (
    SEEN_INTERVAL_S,
    AccountError,
    PasswordChangeRefused,
    SessionNotFound,
    user_password_change,
    user_session_end,
    user_sessions_active,
    user_sessions_end_others,
)
from apps.rbac.twofactor_services import recovery_codes_remaining, twofactor_enabled, twofactor_required

PASSWORD_MAX = 1024  # long passphrases are fine; megabytes of "password" to hash are not


class PasswordChangeForm(forms.Form):
    current_password = forms.CharField(
        label="Current password",
        strip=False,
        max_length=PASSWORD_MAX,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
    )
    new_password = forms.CharField(
        label="New password",
        strip=False,
        max_length=PASSWORD_MAX,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password", "aria-describedby": "new-password-hint"}),
    )
    new_password_again = forms.CharField(
        label="New password, again",
        strip=False,
        max_length=PASSWORD_MAX,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        new, again = cleaned.get("new_password"), cleaned.get("new_password_again")
        if new and again and new != again:
            self.add_error("new_password_again", "The two new passwords are not the same.")
        return cleaned


@lru_cache(maxsize=512)
def device_label(user_agent: str) -> str:
    """ "Firefox 128 on Ubuntu", from a user agent (ua-parser's rules); the raw string's start when they know it not."""
    if not user_agent:
        return "Unknown browser"
    parsed = user_agent_parse(user_agent)
    browser = parsed.user_agent
    system = parsed.os
    if browser is None or browser.family == "Other":
        return user_agent[:60]
    name = f"{browser.family} {browser.major}" if browser.major else browser.family
    if system is not None and system.family != "Other":
        name += f" on {system.family}"
    return name


def _security_page(request: HttpRequest, *, password_form: PasswordChangeForm, status: int = 200) -> HttpResponse:
    user = request.user
    sessions = user_sessions_active(user=user, current_key=request.session.session_key)
    # Last-seen times are written at most once a minute (account_services.SEEN_INTERVAL_S), so "0 minutes ago" would
    # claim a precision they do not have.
    active_since = timezone.now() - timedelta(seconds=2 * SEEN_INTERVAL_S)
    context = {
        "twofactor_enabled": twofactor_enabled(user=user),
        "twofactor_required": twofactor_required(user=user),
        "recovery_remaining": recovery_codes_remaining(user=user),
        "password_form": password_form,
        "sessions": [
            {"session": s, "device": device_label(s.user_agent), "active": s.last_seen_at >= active_since}
            for s in sessions
        ],
        "other_sessions": sum(1 for session in sessions if not session.current),
    }
    return render(request, "console/security.html", context, status=status)


@never_cache
@login_required
def security_view(request: HttpRequest) -> HttpResponse:
    return _security_page(request, password_form=PasswordChangeForm())


@never_cache
@sensitive_post_parameters("current_password", "new_password", "new_password_again")
@require_POST
@login_required
def password_change_view(request: HttpRequest) -> HttpResponse:
    form = PasswordChangeForm(request.POST)
    if form.is_valid():
        user = request.user
        try:
            ended = user_password_change(
                user=user,
                current_password=form.cleaned_data["current_password"],
                new_password=form.cleaned_data["new_password"],
                current_key=request.session.session_key,
                actor=user,
                context=AuditContext.from_request(request),
            )
        except PasswordChangeRefused as refusal:
            for reason in refusal.reasons:
                form.add_error(refusal.field, reason)
        else:
            # Django signs out every session whose password hash is stale; this one stays signed in on a new key.
            session_key_cycle(request, keep_user=user)
            others = f" {ended} other session{'s' if ended != 1 else ''} signed out." if ended else ""
            messages.success(request, f"Your password is changed.{others}")
            return redirect("console:security")
    return _security_page(request, password_form=form, status=400)


@require_POST
@login_required
def session_end_view(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        user_session_end(
            user=request.user,
            session_pk=pk,
            current_key=request.session.session_key,
            actor=request.user,
            context=AuditContext.from_request(request),
        )
    except SessionNotFound:
        raise Http404("no such session") from None
    except AccountError as refusal:
        messages.error(request, str(refusal))
    else:
        messages.success(request, "That session is signed out.")
    return redirect("console:security")


@require_POST
@login_required
def sessions_end_others_view(request: HttpRequest) -> HttpResponse:
    ended = user_sessions_end_others(
        user=request.user,
        current_key=request.session.session_key,
        actor=request.user,
        context=AuditContext.from_request(request),
    )
    if ended:
        messages.success(request, f"{ended} other session{'s' if ended != 1 else ''} signed out.")
    else:
        messages.info(request, "You had no other sessions.")
    return redirect("console:security")
