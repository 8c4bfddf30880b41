"""Sending deliveries to real receivers: a loopback HTTP server that checks the webhook signature, a Slack-style
receiver, and an SMTP server. Each attempt runs the Celery task's body in this process; the retries between attempts
are tested with a real worker (test_worker.py)."""

from __future__ import annotations

import pytest

from apps.notifications import services
from apps.notifications.models import Channel, Delivery, EventKind
from apps.notifications.tasks import delivery_send
from apps.notifications.transport import RESPONSE_READ_MAX, delivery_transmit

pytestmark = pytest.mark.django_db


def _test_delivery(channel: Channel, owner) -> Delivery:
    return services.channel_test_send(channel=channel, actor=owner)


def test_a_webhook_arrives_signed_with_the_channel_secret(owner, org, loopback_allowed, receiver):
    created = services.channel_create(
        organization=org, name="hook", kind="webhook", url=receiver.url, events=["deployment.failed"], actor=owner
    )
    receiver.secret = created.secret
    delivery = _test_delivery(created.channel, owner)
    assert delivery_send.apply(args=(delivery.pk,)).get() == Delivery.Status.SENT
    (request,) = receiver.received
    assert request.signature_valid
    assert request.headers["Inferia-Event"] == EventKind.TEST
    assert request.json()["id"] == delivery.pk
    assert request.json()["kind"] == EventKind.TEST
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == (Delivery.Status.SENT, 1, 200)
    # The same message a second time (a redelivered task) sends nothing more.
    assert delivery_send.apply(args=(delivery.pk,)).get() == Delivery.Status.SENT
    assert len(receiver.received) == 1


def test_a_signature_under_another_secret_does_not_verify(owner, org, loopback_allowed, receiver):
    created = services.channel_create(organization=org, name="hook", kind="webhook", url=receiver.url, actor=owner)
    receiver.secret = "whsec_someone-elses"
    assert delivery_transmit(_test_delivery(created.channel, owner)).ok
    assert receiver.received[0].signature_valid is False


def test_a_slack_channel_gets_a_text_message(owner, org, loopback_allowed, receiver):
    created = services.channel_create(organization=org, name="slack", kind="slack", url=receiver.url, actor=owner)
    assert created.secret == ""
    assert delivery_transmit(_test_delivery(created.channel, owner)).ok
    assert receiver.received[0].json() == {"text": "[Inferia] Test message to channel slack"}


def test_a_failing_answer_is_read_only_so_far_and_reported(owner, org, loopback_allowed, receiver):
    created = services.channel_create(organization=org, name="hook", kind="webhook", url=receiver.url, actor=owner)
    receiver.statuses = [503]
    outcome = delivery_transmit(_test_delivery(created.channel, owner))
    assert not outcome.ok
    assert outcome.status == 503
    assert outcome.error.startswith("HTTP 503")
    assert len(outcome.error) < RESPONSE_READ_MAX


def test_the_connection_is_guarded_against_private_addresses_when_sending(owner, org, settings, receiver):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True
    created = services.channel_create(organization=org, name="hook", kind="webhook", url=receiver.url, actor=owner)
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False  # what the URL resolves to is checked again at connection time
    outcome = delivery_transmit(_test_delivery(created.channel, owner))
    assert not outcome.ok
    assert "non-public" in outcome.error
    assert receiver.received == []


def test_an_email_channel_sends_through_the_smtp_server(owner, org, smtp):
    created = services.channel_create(
        organization=org, name="mail", kind="email", recipients=["ops@acme.test", "cto@acme.test"], actor=owner
    )
    delivery = _test_delivery(created.channel, owner)
    assert delivery_send.apply(args=(delivery.pk,)).get() == Delivery.Status.SENT
    (envelope,) = smtp.messages
    assert sorted(envelope.rcpt_tos) == ["cto@acme.test", "ops@acme.test"]
    assert b"Subject: [Inferia] Test message to channel mail" in envelope.content


def test_an_unreachable_smtp_server_is_a_failed_attempt(owner, org, settings):
    from tests.kit.ports import port_reserve

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port_reserve()
    created = services.channel_create(
        organization=org, name="mail", kind="email", recipients=["ops@acme.test"], actor=owner
    )
    outcome = delivery_transmit(_test_delivery(created.channel, owner))
    assert not outcome.ok
    assert "Connection" in outcome.error


def test_rotating_the_fernet_keys_keeps_webhook_secrets_usable(owner, org, settings, loopback_allowed, receiver):
    from cryptography.fernet import Fernet

    from apps.audit.models import AuditEvent
    from apps.compute.credentials import credentials_decrypt

    old_key = Fernet.generate_key().decode()
    settings.INFERIA_FERNET_KEYS = [old_key]
    created = services.channel_create(organization=org, name="hook", kind="webhook", url=receiver.url, actor=owner)
    before = created.channel.secret_encrypted
    new_key = Fernet.generate_key().decode()
    settings.INFERIA_FERNET_KEYS = [new_key, old_key]
    assert services.channel_secrets_rotate() == 1
    settings.INFERIA_FERNET_KEYS = [new_key]  # the old key is gone: the secret must decrypt under the new one
    created.channel.refresh_from_db()
    assert created.channel.secret_encrypted != before
    assert credentials_decrypt(created.channel.secret_encrypted)["secret"] == created.secret
    receiver.secret = created.secret
    assert delivery_transmit(_test_delivery(created.channel, owner)).ok
    assert receiver.received[0].signature_valid
    event = AuditEvent.objects.get(action="notification_channel.secrets_rotate")
    assert created.secret not in str(event.changes)
