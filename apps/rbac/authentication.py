"""API key authentication for the REST API, in a module of its own: DRF imports authentication classes while it
is still being imported itself, so this module must not import DRF's views. Like `drf.py`, an edge module of the
REST API (it reads keys' models and hashing); no domain module imports it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.keys.models import ApiKey
from apps.keys.services import KEY_PREFIX, hash_key

# How stale `last_used_at` may get before an API call refreshes it: one write a minute per key, not per call.
LAST_USED_GRANULARITY = timedelta(minutes=1)


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Bearer sk-inf-...`: the key's owner becomes `request.user` (anonymous for a service key)
    and the key `request.auth`; what the key may do is decided by `.restrict()`, from its scopes and owner."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        secret = header[1].decode(errors="replace")
        if not secret.startswith(KEY_PREFIX):
            return None  # some other bearer scheme; let the next authenticator look
        key = (
            ApiKey.objects.select_related("owner", "organization")
            .filter(secret_hash=hash_key(secret), organization__is_active=True)
            .first()
        )
        if key is None or not key.is_usable():
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key.")
        if key.owner_id is not None and not key.owner.is_active:
            raise exceptions.AuthenticationFailed("The key's owner is deactivated.")
        now = timezone.now()
        if key.last_used_at is None or key.last_used_at < now - LAST_USED_GRANULARITY:
            # A conditional UPDATE: concurrent requests with the same key write once.
            ApiKey.objects.filter(pk=key.pk, last_used_at=key.last_used_at).update(last_used_at=now)
        return (key.owner if key.owner_id else AnonymousUser()), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
