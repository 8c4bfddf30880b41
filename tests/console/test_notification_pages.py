"""The notification pages: channels listed, created (a webhook's secret shown on that one page only), edited,
test-sent and deleted through the audited services; deliveries listed; another organisation's channels and
deliveries are 404 and a viewer's forged POSTs 403."""

from __future__ import annotations

import re

import pytest

from apps.audit.models import AuditEvent
from apps.notifications import services
from apps.notifications.models import Channel, Delivery

pytestmark = pytest.mark.django_db

PUBLIC = "http://93.184.215.14:8000/hook"  # a literal public address: nothing is resolved or called on create


def _form(org, **fields):
    return {"organization": org.pk, "name": "ops", "kind": "webhook", "url": PUBLIC, "events": ["deployment.failed"],
            "enabled": "on", **fields}  # fmt: skip


def test_an_owner_creates_a_webhook_channel_whose_secret_is_shown_once(org, owner, signed_in):
    client = signed_in(owner)
    response = client.post("/console/notifications/new/", _form(org))
    assert response.status_code == 200
    secret = re.search(r'data-testid="channel-secret">(whsec_[^<]+)<', response.content.decode()).group(1)
    channel = Channel.objects.get(organization=org, name="ops")
    assert secret not in channel.secret_encrypted
    for path in ("/console/notifications/", f"/console/notifications/{channel.pk}/", "/console/audit/"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert secret not in page.content.decode(), path
    assert AuditEvent.objects.filter(action="notification_channel.create", target_id=str(channel.pk)).exists()


def test_an_owner_edits_tests_and_deletes_a_channel(org, owner, signed_in):
    client = signed_in(owner)
    channel = services.channel_create(organization=org, name="ops", kind="slack", url=PUBLIC, actor=owner).channel
    edited = client.post(f"/console/notifications/{channel.pk}/", _form(org, name="ops-2", events=["budget.80"]))
    assert edited.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.events, channel.enabled) == ("ops-2", ["budget.80"], True)
    assert client.post(f"/console/notifications/{channel.pk}/test/").status_code == 302
    delivery = Delivery.objects.get(channel=channel)
    assert delivery.status == Delivery.Status.PENDING  # sent by a worker, never in the request
    listed = client.get("/console/notifications/deliveries/")
    assert "Test message to channel ops-2" in listed.content.decode()
    assert client.post(f"/console/notifications/{channel.pk}/delete/").status_code == 302
    assert not Channel.objects.filter(pk=channel.pk).exists()
    actions = set(
        AuditEvent.objects.filter(action__startswith="notification_channel.").values_list("action", flat=True)
    )
    assert actions == {"notification_channel.create", "notification_channel.update", "notification_channel.test",
                       "notification_channel.delete"}  # fmt: skip


def test_a_private_url_is_refused_on_the_form(org, owner, signed_in, settings):
    settings.INFERIA_UPSTREAM_ALLOW_PRIVATE = False
    response = signed_in(owner).post("/console/notifications/new/", _form(org, url="http://10.0.0.1/hook"))
    assert response.status_code == 400
    assert "non-public" in response.content.decode()
    assert not Channel.objects.exists()


def test_a_viewer_sees_channels_but_forged_posts_are_refused(org, owner, viewer, signed_in):
    channel = services.channel_create(organization=org, name="ops", kind="slack", url=PUBLIC, actor=owner).channel
    client = signed_in(viewer)
    page = client.get(f"/console/notifications/{channel.pk}/")
    assert page.status_code == 200
    assert 'data-testid="channel-save"' not in page.content.decode()
    assert client.post(f"/console/notifications/{channel.pk}/", _form(org, name="x")).status_code == 403
    assert client.post(f"/console/notifications/{channel.pk}/test/").status_code == 403
    assert client.post(f"/console/notifications/{channel.pk}/delete/").status_code == 403
    assert client.post("/console/notifications/new/", _form(org, name="mine")).status_code == 403
    assert Channel.objects.get().name == "ops"
    assert not Delivery.objects.exists()


def test_another_organisation_cannot_see_or_touch_channels_or_deliveries(org, owner, outsider, signed_in):
    channel = services.channel_create(organization=org, name="ops", kind="slack", url=PUBLIC, actor=owner).channel
    services.channel_test_send(channel=channel, actor=owner)
    client = signed_in(outsider)
    assert "ops" not in client.get("/console/notifications/").content.decode()
    assert "Test message" not in client.get("/console/notifications/deliveries/").content.decode()
    assert client.get(f"/console/notifications/{channel.pk}/").status_code == 404
    assert client.post(f"/console/notifications/{channel.pk}/", _form(org, name="x")).status_code == 404
    assert client.post(f"/console/notifications/{channel.pk}/test/").status_code == 404
    assert client.post(f"/console/notifications/{channel.pk}/delete/").status_code == 404
    assert client.post("/console/notifications/new/", _form(org, name="intruder")).status_code == 403
    assert Channel.objects.get().name == "ops"
    assert Delivery.objects.count() == 1
