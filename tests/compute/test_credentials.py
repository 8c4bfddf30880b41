"""Provider credentials: encrypted at rest, rotated under a new key, never printed."""

from __future__ import annotations

import pickle

import pytest
from cryptography.fernet import Fernet

from apps.compute.credentials import (
    CredentialsError,
    Secrets,
    credentials_decrypt,
    credentials_encrypt,
    credentials_rotate,
    provider_credentials,
    provider_credentials_set,
)
from apps.compute.models import Provider
from tests.factories import ProviderFactory

SECRET = {"api_key": "sk-live-very-secret", "kubeconfig": "apiVersion: v1\ntoken: abc"}


@pytest.fixture
def old_key(settings):
    key = Fernet.generate_key().decode()
    settings.INFERIA_FERNET_KEYS = [key]
    return key


def test_it_round_trips_a_dict_and_stores_no_plaintext(old_key):
    token = credentials_encrypt(SECRET)
    assert "very-secret" not in token
    assert credentials_decrypt(token).reveal() == SECRET


def test_empty_credentials_are_stored_as_empty(old_key):
    assert credentials_encrypt({}) == ""
    assert dict(credentials_decrypt("")) == {}


def test_secrets_never_show_their_values():
    secrets = Secrets(SECRET)
    for text in (repr(secrets), str(secrets), f"{secrets}", repr([secrets]), repr({"c": secrets})):
        assert "very-secret" not in text
        assert "token: abc" not in text
    assert "api_key" in repr(secrets)
    assert secrets["api_key"] == "sk-live-very-secret"


def test_secrets_refuse_to_be_pickled():
    with pytest.raises(TypeError):
        pickle.dumps(Secrets(SECRET))


def test_a_token_from_an_unknown_key_is_refused(old_key, settings):
    token = credentials_encrypt(SECRET)
    settings.INFERIA_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialsError) as raised:
        credentials_decrypt(token)
    assert "very-secret" not in str(raised.value)


@pytest.mark.django_db
def test_rotation_rewrites_every_provider_under_the_new_first_key(old_key, settings):
    providers = [
        ProviderFactory(
            organization=None, name=f"p{index}", kind=Provider.Kind.KUBERNETES, credentials={**SECRET, "n": index}
        )
        for index in range(5)
    ]
    empty = ProviderFactory(organization=None, name="no-secrets")
    before = {p.pk: p.credentials_encrypted for p in providers}

    new_key = Fernet.generate_key().decode()
    settings.INFERIA_FERNET_KEYS = [new_key, old_key]
    assert credentials_rotate(batch_size=2) == 5

    # The old key is removed: everything must still decrypt, so everything was rewritten under the new one.
    settings.INFERIA_FERNET_KEYS = [new_key]
    for provider in providers:
        provider.refresh_from_db()
        assert provider.credentials_encrypted != before[provider.pk]
        assert provider_credentials(provider).reveal() == {**SECRET, "n": providers.index(provider)}
    empty.refresh_from_db()
    assert empty.credentials_encrypted == ""


@pytest.mark.django_db
def test_without_rotation_removing_the_old_key_breaks_decryption(old_key, settings):
    provider = Provider(name="p", kind=Provider.Kind.SSH)
    provider_credentials_set(provider=provider, credentials=SECRET)
    provider.save()
    settings.INFERIA_FERNET_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(CredentialsError):
        provider_credentials(provider)
    with pytest.raises(CredentialsError):
        credentials_rotate()


@pytest.mark.django_db
def test_rotation_is_audited_per_batch_by_the_system_or_the_given_actor(old_key, settings, owner):
    from apps.audit.models import AuditEvent

    ids = [
        ProviderFactory(organization=None, name=f"p{index}", kind=Provider.Kind.KUBERNETES, credentials=SECRET).pk
        for index in range(3)
    ]
    settings.INFERIA_FERNET_KEYS = [Fernet.generate_key().decode(), old_key]

    credentials_rotate(batch_size=2)
    credentials_rotate(actor=owner)

    events = list(AuditEvent.objects.filter(action="provider.credentials_rotate").order_by("seq"))
    assert [event.changes["providers"] for event in events] == [ids[:2], ids[2:], ids]
    assert [event.actor_user_id for event in events] == [None, None, owner.pk]
    assert "very-secret" not in str([event.changes for event in events])
