"""API key authentication for the REST API, in a module of its own: DRF imports authentication classes while it
is still being imported itself, so this module must not import DRF's views. Like `drf.py`, an edge module of the
REST API (it reads keys' models and hashing); no domain module imports it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.keys.models import ApiKey
from apps.keys.services import KEY_PREFIX, api_key_authenticate


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
        key = api_key_authenticate(secret=secret)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API key, or its owner is deactivated.")
        return (key.owner if key.owner_id else AnonymousUser()), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
