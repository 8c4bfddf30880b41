"""Single sign-on pages: the redirect to the identity provider and the callback it sends the browser back to.

mozilla-django-oidc does the protocol (state, nonce, PKCE, code exchange, token signature); these subclasses
take the provider from `INFERIA_OIDC_*` settings, audit failures, and finish sign-in the console's way (the
second-factor step when the provider is not trusted for it)."""

from __future__ import annotations

import logging

import requests
from django.contrib import messages
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.views import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record
from apps.console.auth_flow import safe_next, session_second_step_begin, session_sign_in
from apps.rbac.oidc import OidcUnavailable, oidc_config, oidc_setting
from apps.rbac.twofactor_services import twofactor_enabled

logger = logging.getLogger(__name__)


class SsoStartView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider's authorization endpoint with a fresh state, nonce and PKCE challenge."""

    get_settings = staticmethod(oidc_setting)

    def __init__(self, **kwargs: object) -> None:
        View.__init__(self, **kwargs)  # the provider is read per request, not when the view is built

    def get(self, request: HttpRequest) -> HttpResponse:
        config = oidc_config()
        if config is None:
            raise Http404("single sign-on is not configured")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = oidc_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except OidcUnavailable:
            logger.exception("single sign-on provider unavailable")
            messages.error(request, "The single sign-on provider cannot be reached. Try again later.")
            return redirect("console:login")
        self.OIDC_RP_CLIENT_ID = config.client_id
        return super().get(request)


class SsoCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back with a code: checks state, exchanges the code, verifies the ID
    token (through InferiaOidcBackend), then signs the user in or refuses, auditing either way."""

    get_settings = staticmethod(oidc_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        if oidc_config() is None:
            raise Http404("single sign-on is not configured")
        try:
            return super().get(request)
        except (SuspiciousOperation, requests.RequestException, OidcUnavailable) as exc:
            logger.warning("single sign-on failed: %s", exc)
            request.inferia_sso_failure = str(exc)  # type: ignore[attr-defined]
            return self.login_failure()

    def login_failure(self) -> HttpResponse:
        request = self.request
        if not hasattr(request, "inferia_sso_refusal"):  # refusals by oidc_user_sync are audited already
            reason = (
                getattr(request, "inferia_sso_failure", None)
                or request.GET.get("error")
                or "the provider did not vouch for this sign-in"
            )
            with transaction.atomic():
                audit_record(
                    action="login.failure",
                    changes={"method": "sso", "reason": reason[:300]},
                    outcome=AuditEvent.Outcome.FAILURE,
                    context=AuditContext.from_request(request),
                )
        messages.error(request, "Single sign-on did not complete. Try again, or sign in with your password.")
        return HttpResponseRedirect(self.failure_url)

    def login_success(self) -> HttpResponse:
        request, user = self.request, self.user
        config = oidc_config()
        with transaction.atomic():
            audit_record(
                action="login.success",
                actor=user,
                target=user,
                changes={"method": "sso", "issuer": config.issuer if config else ""},
                context=AuditContext.from_request(request),
            )
        next_url = safe_next(request, request.session.get("oidc_login_next"))
        if config is not None and not config.satisfies_2fa and twofactor_enabled(user=user):
            session_second_step_begin(request, user, next_url=next_url)
            return redirect("console:login-verify")
        session_sign_in(request, user, second_factor="sso")
        return redirect(next_url)
