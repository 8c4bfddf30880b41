"""The password authentication backend: Django's ModelBackend behind the throttle and the sign-in audit."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from apps.audit.services import AuditContext
from apps.orgs.models import User
from apps.rbac.login_services import login_failure_record, login_refusal, login_success_record


def _context(request: HttpRequest | None) -> AuditContext:
    return AuditContext.from_request(request)


class ThrottledModelBackend(ModelBackend):
    """Checks e-mail and password like ModelBackend; refuses locked (account, address) pairs and addresses and
    slowed-down accounts (apps/rbac/login_services.py), counts failures
    and audits every attempt. Raising PermissionDenied stops Django from trying other backends."""

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> Any:
        email = (username or kwargs.get(User.USERNAME_FIELD) or "").strip().lower()
        if not email or password is None:
            return None
        context = _context(request)
        known = User.objects.filter(email__iexact=email).first()
        refusal = login_refusal(email=email, address=context.ip_address)
        if refusal is not None:
            login_failure_record(email=email, user=known, context=context, reason=refusal.reason)
            raise PermissionDenied("too many failed sign-ins; try again later")
        user = super().authenticate(request, username=email, password=password, **kwargs)
        if user is None:
            login_failure_record(email=email, user=known, context=context, reason="bad credentials")
            return None
        login_success_record(user=user, context=context)
        return user
