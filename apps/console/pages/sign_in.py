"""The console's sign-in pages: password sign-in, the two-factor step, enrolment with a QR code, recovery codes,
sign-out, and the landing page (the Security page itself is in security.py). Each view parses the form, calls one
service and renders."""

from __future__ import annotations

import math

import qrcode
import qrcode.image.svg
from django import forms
from django.contrib import auth, messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_http_methods, require_POST

from apps.audit.services import AuditContext, audit_record
from apps.console.auth_flow import (
    SESSION_SECOND_FACTOR,
    safe_next,
    session_key_cycle,
    session_pending_user,
    session_second_step_begin,
    session_sign_in,
)
from apps.orgs.models import Membership
from apps.rbac.login_services import login_refusal
from apps.rbac.oidc import oidc_config
from apps.rbac.twofactor_services import (
    TwoFactorCodeReused,
    TwoFactorError,
    TwoFactorLocked,
    recovery_codes_regenerate,
    recovery_codes_remaining,
    totp_disable,
    totp_enrolment_confirm,
    totp_enrolment_pending,
    totp_enrolment_start,
    twofactor_enabled,
    twofactor_required,
    twofactor_verify,
)
from inferia_runtime.client_address import client_address

SESSION_RECOVERY_CODES = "inferia_recovery_codes_once"


class LoginForm(forms.Form):
    email = forms.EmailField(label="E-mail address", max_length=254)
    password = forms.CharField(label="Password", strip=False, widget=forms.PasswordInput)


class CodeForm(forms.Form):
    code = forms.CharField(label="Authentication code", max_length=32, strip=True)


def _code_error(exc: TwoFactorError) -> str:
    if isinstance(exc, TwoFactorLocked):
        return "Too many wrong codes. Wait a few minutes, then try again."
    if isinstance(exc, TwoFactorCodeReused) and exc.kind == "recovery":
        return "This recovery code was already used. Each recovery code works once: enter another one."
    if isinstance(exc, TwoFactorCodeReused):
        return "This code was already used. Wait for your authenticator app to show a new one."
    return "That code is not valid. Check your authenticator app and try again."


def qr_svg(data: str) -> SafeString:
    """An inline SVG QR code of `data` (generated here, so the markup is ours and safe to embed)."""
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    svg = image.to_string(encoding="unicode")
    # The SVG is built by qrcode from our own URI (ElementTree escapes it); nothing user-typed is inside.
    return mark_safe(svg.replace("<svg ", '<svg role="img" aria-label="QR code for your authenticator app" ', 1))  # noqa: S308


@never_cache
@sensitive_post_parameters("password")
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if request.method == "GET" and request.user.is_authenticated:
        return redirect(safe_next(request, next_url))
    form = LoginForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"].strip().lower()
        user = auth.authenticate(request, username=email, password=form.cleaned_data["password"])
        if user is None:
            refusal = login_refusal(email=email, address=client_address(request))
            if refusal is None:
                error = "That e-mail address and password do not match an account."
            elif refusal.reason == "slowed":
                error = f"Too many failed sign-ins. Wait {math.ceil(refusal.retry_after_s)} seconds, then try again."
            else:
                error = "Too many failed sign-ins. Wait a few minutes, then try again."
        elif twofactor_enabled(user=user):
            session_second_step_begin(request, user, next_url=safe_next(request, next_url))
            return redirect("console:login-verify")
        else:
            session_sign_in(request, user, second_factor="none")
            return redirect(safe_next(request, next_url))
    context = {"form": form, "error": error, "next": next_url, "sso": oidc_config()}
    return render(request, "console/login.html", context, status=200)


@never_cache
@require_http_methods(["GET", "POST"])
def login_verify_view(request: HttpRequest) -> HttpResponse:
    pending = session_pending_user(request)
    if pending is None:
        messages.info(request, "Your sign-in expired. Sign in again.")
        return redirect("console:login")
    user, info = pending
    form = CodeForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            method = twofactor_verify(
                user=user, code=form.cleaned_data["code"], context=AuditContext.from_request(request)
            )
        except TwoFactorError as exc:
            error = _code_error(exc)
        else:
            session_sign_in(request, user, second_factor=method)
            if method == "recovery":
                left = recovery_codes_remaining(user=user)
                messages.warning(request, f"You signed in with a recovery code; {left} remain.")
            return redirect(safe_next(request, info.get("next")))
    return render(request, "console/login_verify.html", {"form": form, "error": error, "email": user.email})


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        with transaction.atomic():
            audit_record(
                action="logout", actor=request.user, target=request.user, context=AuditContext.from_request(request)
            )
    auth.logout(request)
    messages.info(request, "You are signed out.")
    return redirect("console:login")


@login_required
def home_view(request: HttpRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user=request.user).select_related("organization", "role")
    context = {
        "memberships": memberships,
        "twofactor_enabled": twofactor_enabled(user=request.user),
    }
    return render(request, "console/home.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def twofactor_enrol_view(request: HttpRequest) -> HttpResponse:
    user = request.user
    if twofactor_enabled(user=user):
        return redirect("console:security")
    context = AuditContext.from_request(request)
    enrolment = totp_enrolment_pending(user=user) or totp_enrolment_start(user=user, actor=user, context=context)
    form = CodeForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            codes = totp_enrolment_confirm(user=user, code=form.cleaned_data["code"], actor=user, context=context)
        except TwoFactorError as exc:
            error = _code_error(exc)
        else:
            # The user just proved the authenticator: this session counts as signed in with two factors.
            session_key_cycle(request)
            request.session[SESSION_SECOND_FACTOR] = "totp"
            request.session[SESSION_RECOVERY_CODES] = codes
            return redirect("console:recovery-codes")
    page = {
        "form": form,
        "error": error,
        "qr": qr_svg(enrolment.provisioning_uri),
        "secret_groups": [enrolment.secret[i : i + 4] for i in range(0, len(enrolment.secret), 4)],
        "required": twofactor_required(user=user),
    }
    return render(request, "console/twofactor_enrol.html", page)


@never_cache
@login_required
def recovery_codes_view(request: HttpRequest) -> HttpResponse:
    codes = request.session.pop(SESSION_RECOVERY_CODES, None)
    if not codes:
        messages.info(request, "Recovery codes are shown only once. Generate new ones if you lost them.")
        return redirect("console:security")
    return render(request, "console/recovery_codes.html", {"codes": codes})


@require_POST
@login_required
def twofactor_disable_view(request: HttpRequest) -> HttpResponse:
    if twofactor_required(user=request.user):
        messages.error(request, "An organisation you administer requires two-factor sign-in; it cannot be turned off.")
        return redirect("console:security")
    form = CodeForm(request.POST)
    if form.is_valid():
        try:
            totp_disable(
                user=request.user,
                code=form.cleaned_data["code"],
                actor=request.user,
                context=AuditContext.from_request(request),
            )
        except TwoFactorError as exc:
            messages.error(request, _code_error(exc))
        else:
            request.session[SESSION_SECOND_FACTOR] = "none"
            messages.success(request, "Two-factor sign-in is off.")
    return redirect("console:security")


@require_POST
@login_required
def recovery_codes_regenerate_view(request: HttpRequest) -> HttpResponse:
    form = CodeForm(request.POST)
    if form.is_valid():
        try:
            codes = recovery_codes_regenerate(
                user=request.user,
                code=form.cleaned_data["code"],
                actor=request.user,
                context=AuditContext.from_request(request),
            )
        except TwoFactorError as exc:
            messages.error(request, _code_error(exc))
        else:
            request.session[SESSION_RECOVERY_CODES] = codes
            return redirect("console:recovery-codes")
    return redirect("console:security")
