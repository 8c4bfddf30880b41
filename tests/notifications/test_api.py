"""The REST API of notification channels and deliveries: the secret is shown once, URLs pass the SSRF checks,
every change is audited, and one organisation never sees or touches another's channels or deliveries."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.notifications.models import Channel, Delivery

pytestmark = pytest.mark.django_db


def _create(client, org, url: str, **extra):
    body = {"organization": org.pk, "name": "ops", "kind": "webhook", "url": url, "events": ["deployment.failed"]}
    return client.post("/api/notification-channels/", {**body, **extra}, format="json")


def test_the_signing_secret_is_in_the_create_response_only(as_user, owner, org, loopback_allowed, receiver):
    client = as_user(owner)
    created = _create(client, org, receiver.url)
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    channel = Channel.objects.get(pk=created.json()["id"])
    assert secret not in channel.secret_encrypted  # stored encrypted
    pk = channel.pk
    answers = [
        client.get("/api/notification-channels/"),
        client.get(f"/api/notification-channels/{pk}/"),
        client.patch(f"/api/notification-channels/{pk}/", {"name": "ops-2"}, format="json"),
        client.post(f"/api/notification-channels/{pk}/test/"),
        client.get("/api/notification-deliveries/"),
    ]
    for answer in answers:
        assert answer.status_code in (200, 202), answer.content
        assert secret.encode() not in answer.content
        assert b'"secret"' not in answer.content
    assert client.get(f"/api/notification-channels/{pk}/").json()["has_secret"] is True
    events = AuditEvent.objects.filter(action__startswith="notification_channel.")
    assert sorted(events.values_list("action", flat=True)) == [
        "notification_channel.create",
        "notification_channel.test",
        "notification_channel.update",
    ]
    assert not any(secret in str(event.changes) for event in events)


def test_it_refuses_webhook_urls_that_reach_private_or_metadata_addresses(as_user, owner, org, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    client = as_user(owner)
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):
        answer = _create(client, org, url)
        assert answer.status_code == 400, (url, answer.content)
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = True  # a laptop's setting still never reaches cloud metadata
    assert _create(client, org, "http://169.254.169.254/latest/").status_code == 400
    assert not Channel.objects.exists()


def test_an_email_channel_needs_valid_recipients(as_user, owner, org):
    client = as_user(owner)
    body = {"organization": org.pk, "name": "mail", "kind": "email", "events": ["budget.80"]}
    assert client.post("/api/notification-channels/", {**body, "recipients": []}, format="json").status_code == 400
    answer = client.post("/api/notification-channels/", {**body, "recipients": ["ops@acme.test"]}, format="json")
    assert answer.status_code == 201
    assert answer.json()["secret"] == ""


def test_a_viewer_sees_channels_but_may_not_change_them(as_user, owner, viewer, org, loopback_allowed, receiver):
    pk = _create(as_user(owner), org, receiver.url).json()["id"]
    client = as_user(viewer)
    assert client.get(f"/api/notification-channels/{pk}/").status_code == 200
    assert client.patch(f"/api/notification-channels/{pk}/", {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/notification-channels/{pk}/").status_code == 403
    assert _create(client, org, receiver.url, name="mine").status_code == 403


def test_it_hides_one_organisations_channels_and_deliveries_from_another(
    as_user, owner, outsider, org, other_org, loopback_allowed, receiver
):
    pk = _create(as_user(owner), org, receiver.url).json()["id"]
    as_user(owner).post(f"/api/notification-channels/{pk}/test/")
    delivery = Delivery.objects.get(channel_id=pk)
    client = as_user(outsider)
    assert client.get("/api/notification-channels/").json()["results"] == []
    assert client.get("/api/notification-deliveries/").json()["results"] == []
    assert client.get(f"/api/notification-channels/{pk}/").status_code == 404
    assert client.get(f"/api/notification-deliveries/{delivery.pk}/").status_code == 404
    assert client.patch(f"/api/notification-channels/{pk}/", {"name": "x"}, format="json").status_code == 404
    assert client.post(f"/api/notification-channels/{pk}/test/").status_code == 404
    assert client.delete(f"/api/notification-channels/{pk}/").status_code == 404
    assert _create(client, org, receiver.url, name="intruder").status_code in (400, 403)
    assert Channel.objects.get(pk=pk).name == "ops"
    assert Delivery.objects.filter(channel_id=pk).count() == 1


def test_the_list_of_deliveries_costs_the_same_queries_for_many(
    as_user, owner, org, loopback_allowed, receiver, django_assert_max_num_queries
):
    client = as_user(owner)
    pk = _create(client, org, receiver.url).json()["id"]
    for _ in range(5):
        client.post(f"/api/notification-channels/{pk}/test/")
    with django_assert_max_num_queries(12):
        answer = client.get("/api/notification-deliveries/")
    assert answer.json()["count"] == 5
