"""Provider credentials at rest: a JSON object encrypted with MultiFernet from `settings.INFERIA_FERNET_KEYS`.

The first key encrypts, every key decrypts, so an operator rotates by putting a new key first, running
`credentials_rotate()` (`inferia secrets rotate`), and only then removing the old key from the list.
Decrypted credentials travel as `Secrets`, a read-only mapping whose repr and str never show a value, so that
a stray log line, traceback or audit diff cannot leak them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import transaction

from apps.audit.actors import Actor

if TYPE_CHECKING:
    from apps.compute.models import Provider


class CredentialsError(Exception):
    """Stored credentials that no configured key decrypts, or that are not a JSON object."""


class Secrets(Mapping[str, Any]):
    """Decrypted credentials: a read-only mapping that shows its keys but never its values when printed."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(data or {})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._data)!r}, values hidden)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the values into a Celery message or a cache: tasks take ids, never secrets.
        raise TypeError("Secrets cannot be pickled; pass the provider id instead")

    def reveal(self) -> dict[str, Any]:
        """A plain dict copy of the values, for the one place that must send them (an HTTP header, a kubeconfig)."""
        return dict(self._data)


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise CredentialsError("INFERIA_FERNET_KEYS is empty")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def _fernet() -> MultiFernet:
    # Keyed by the current list so that a settings change (tests, a reload) is seen at once.
    return _multifernet(tuple(settings.INFERIA_FERNET_KEYS))


def credentials_encrypt(credentials: Mapping[str, Any]) -> str:
    """The MultiFernet token (under the first key) of `credentials`; an empty mapping is stored as ""."""
    if not credentials:
        return ""
    payload = json.dumps(dict(credentials), separators=(",", ":"), sort_keys=True)
    return _fernet().encrypt(payload.encode()).decode()


def credentials_decrypt(token: str) -> Secrets:
    """The credentials stored as `token` ("" means none). Raises CredentialsError if no key decrypts it."""
    if not token:
        return Secrets()
    try:
        raw = _fernet().decrypt(token.encode())
    except InvalidToken:
        raise CredentialsError("provider credentials cannot be decrypted with any key in INFERIA_FERNET_KEYS") from None
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise CredentialsError("provider credentials are not a JSON object")
    return Secrets(data)


# The most text typed credentials may be: a kubeconfig with its certificates fits many times over.
CREDENTIALS_TEXT_MAX = 20_000


def credentials_parse(text: str) -> dict[str, Any] | None:
    """Credentials typed into a form (the console's, Django admin's) as a JSON object of names and values; None for
    empty text (keep what is stored). Raises ValueError with a message that never quotes the text: it is a secret
    even when it is malformed."""
    text = text.strip()
    if not text:
        return None
    if len(text) > CREDENTIALS_TEXT_MAX:
        raise ValueError(f"Credentials are at most {CREDENTIALS_TEXT_MAX:,} characters; nothing was stored.")
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("Credentials are not valid JSON; nothing was stored, type them again.") from None
    if not isinstance(value, dict) or not value or not all(isinstance(key, str) and key for key in value):
        raise ValueError("Credentials must be a JSON object of names and values; nothing was stored.")
    return value


def provider_credentials(provider: Provider) -> Secrets:
    """The decrypted credentials of `provider`."""
    return credentials_decrypt(provider.credentials_encrypted)


def provider_credentials_set(*, provider: Provider, credentials: Mapping[str, Any]) -> None:
    """Put `credentials` on `provider`, encrypted; the caller saves (and audits) the change."""
    provider.credentials_encrypted = credentials_encrypt(credentials)


def credentials_rotate(*, actor: Actor = None, batch_size: int = 200) -> int:
    """Re-encrypt every provider's credentials under the current first key; returns how many were rewritten.

    Run it after putting a new key first in INFERIA_FERNET_KEYS and before removing the old one. Each batch is
    one transaction with its rows locked, so an edit made concurrently is neither lost nor left under the old key;
    each batch records a `provider.credentials_rotate` audit event (by `actor`, None: the system, as `inferia
    secrets rotate` runs it) naming the providers it rewrote, in that same transaction.
    Raises CredentialsError (changing nothing further) on a token that no configured key decrypts.
    """
    from apps.audit.services import audit_record
    from apps.compute.models import Provider

    fernet = _fernet()
    rewritten = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            rows = list(
                Provider.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .exclude(credentials_encrypted="")
                .order_by("pk")
                .only("pk", "credentials_encrypted")[:batch_size]
            )
            for provider in rows:
                try:
                    rotated = fernet.rotate(provider.credentials_encrypted.encode()).decode()
                except InvalidToken:
                    raise CredentialsError(
                        f"provider {provider.pk}: credentials cannot be decrypted with any configured key"
                    ) from None
                Provider.objects.filter(pk=provider.pk).update(credentials_encrypted=rotated)
                rewritten += 1
            if rows:
                audit_record(
                    action="provider.credentials_rotate",
                    actor=actor,
                    changes={"providers": [provider.pk for provider in rows], "count": len(rows)},
                )
        if len(rows) < batch_size:
            return rewritten
        last_pk = rows[-1].pk
