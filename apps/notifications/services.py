"""Writes of the notifications app: channels (created, changed, deleted, test-sent, each audited in the same
transaction) and the fan-out of an event into one delivery per subscribed channel, sent by a Celery task after
commit. Nothing here sends anything: a slow or failing receiver only ever holds a worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.services import AuditContext, audit_record
from apps.compute.credentials import credentials_decrypt, credentials_encrypt
from apps.compute.urlsafety import url_check
from apps.notifications.models import Channel, Delivery, EventKind
from apps.notifications.signing import signing_secret_new
from apps.orgs.models import Organization
from inferia_runtime.errors import DomainRefusal

CHANNEL_FIELDS = ("name", "url", "recipients", "events", "enabled")
RECIPIENTS_MAX = 20
SUBSCRIBABLE = frozenset(kind for kind in EventKind.values if kind != EventKind.TEST)


@dataclass(frozen=True)
class ChannelCreated:
    """A new channel, with its webhook signing secret: the one time the secret is told (empty for other kinds)."""

    channel: Channel
    secret: str


def _text(value: str, *, field: str, limit: int) -> str:
    value = (value or "").strip()
    if "\x00" in value:
        raise DomainRefusal(f"{field} must not contain NUL characters")
    if len(value) > limit:
        raise DomainRefusal(f"{field} is at most {limit} characters")
    return value


def _checked(kind: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (of a channel of `kind`) checked and normalised; DomainRefusal says what is wrong."""
    checked = dict(values)
    if "name" in checked:
        checked["name"] = _text(checked["name"], field="name", limit=200)
        if not checked["name"]:
            raise DomainRefusal("a channel needs a name")
    if "events" in checked:
        events = list(dict.fromkeys(checked["events"] or []))
        unknown = [event for event in events if event not in SUBSCRIBABLE]
        if unknown:
            raise DomainRefusal(f"unknown event kinds: {', '.join(sorted(map(str, unknown)))[:200]}")
        checked["events"] = events
    if kind == Channel.Kind.EMAIL:
        recipients = [_text(r, field="recipient", limit=254) for r in checked.get("recipients") or []]
        if "recipients" in checked:
            if not recipients or len(recipients) > RECIPIENTS_MAX:
                raise DomainRefusal(f"an e-mail channel needs 1 to {RECIPIENTS_MAX} recipients")
            for recipient in recipients:
                try:
                    validate_email(recipient)
                except ValidationError:
                    raise DomainRefusal(f"{recipient[:80]!r} is not an e-mail address") from None
            checked["recipients"] = recipients
        checked.pop("url", None)
    elif "url" in checked:
        url = _text(checked["url"], field="url", limit=2000)
        if not url:
            raise DomainRefusal("a webhook channel needs a URL")
        checked["url"] = url_check(url)  # the same SSRF check as upstreams; the connection is guarded again
        checked.pop("recipients", None)
    return checked


@transaction.atomic
def channel_create(
    *,
    organization: Organization,
    name: str,
    kind: str,
    actor: Actor,
    url: str = "",
    recipients: list[str] | None = None,
    events: list[str] | None = None,
    enabled: bool = True,
    context: AuditContext | None = None,
) -> ChannelCreated:
    """A channel of `organization`. A webhook gets a signing secret, stored encrypted and returned this once."""
    if kind not in Channel.Kind.values:
        raise DomainRefusal(f"unknown channel kind {kind[:40]!r}")
    values = _checked(
        kind, {"name": name, "url": url, "recipients": recipients or [], "events": events or [], "enabled": enabled}
    )
    if kind == Channel.Kind.EMAIL:
        values["url"] = ""
    else:
        values["recipients"] = []
    channel = Channel(organization=organization, kind=kind, **values)
    secret = ""
    if kind == Channel.Kind.WEBHOOK:
        secret = signing_secret_new()
        channel.secret_encrypted = credentials_encrypt({"secret": secret})
    channel.save()
    audit_record(
        action="notification_channel.create",
        actor=actor,
        target=channel,
        organization_id=organization.pk,
        changes={"kind": kind, **{field: values[field] for field in CHANNEL_FIELDS}},
        context=context,
    )
    return ChannelCreated(channel=channel, secret=secret)


@transaction.atomic
def channel_update(
    *, channel: Channel, changes: dict[str, Any], actor: Actor, context: AuditContext | None = None
) -> Channel:
    """Change a channel's name, URL, recipients, events or whether it is enabled (its kind and secret stay)."""
    unknown = set(changes) - set(CHANNEL_FIELDS)
    if unknown:
        raise DomainRefusal(f"cannot change {', '.join(sorted(unknown))}")
    checked = _checked(channel.kind, changes)
    locked = Channel.objects.select_for_update().get(pk=channel.pk)
    diff = {
        field: [getattr(locked, field), value] for field, value in checked.items() if getattr(locked, field) != value
    }
    if not diff:
        return locked
    for field, (_, value) in diff.items():
        setattr(locked, field, value)
    locked.save(update_fields=[*diff, "updated_at"])
    audit_record(
        action="notification_channel.update",
        actor=actor,
        target=locked,
        organization_id=locked.organization_id,
        changes=diff,
        context=context,
    )
    return locked


@transaction.atomic
def channel_delete(*, channel: Channel, actor: Actor, context: AuditContext | None = None) -> None:
    """Delete a channel, its encrypted secret and its deliveries."""
    audit_record(
        action="notification_channel.delete",
        actor=actor,
        target=channel,
        organization_id=channel.organization_id,
        changes={"name": channel.name, "kind": channel.kind},
        context=context,
    )
    channel.delete()


@transaction.atomic
def channel_test_send(*, channel: Channel, actor: Actor, context: AuditContext | None = None) -> Delivery:
    """Queue a test message to `channel` (sent by a worker after commit, like every delivery)."""
    now = timezone.now()
    delivery = Delivery.objects.create(
        organization_id=channel.organization_id,
        channel=channel,
        event_kind=EventKind.TEST,
        event_key=f"test:{now.timestamp():.6f}",
        summary=f"Test message to channel {channel.name}",
        payload={"channel": channel.name},
    )
    audit_record(
        action="notification_channel.test",
        actor=actor,
        target=channel,
        organization_id=channel.organization_id,
        changes={"delivery": delivery.pk},
        context=context,
    )
    _send_after_commit([delivery.pk])
    return delivery


def _send_after_commit(delivery_ids: list[int]) -> None:
    from apps.notifications.tasks import delivery_send

    for delivery_id in delivery_ids:
        transaction.on_commit(lambda pk=delivery_id: delivery_send.delay(pk))  # type: ignore[misc]


@transaction.atomic
def notification_dispatch(
    *, organization_id: int, kind: str, key: str, summary: str, payload: dict[str, Any]
) -> list[int]:
    """One delivery of an event to each enabled channel of the organisation subscribed to `kind`, sent after
    commit; an occurrence (`key`) already delivered to a channel is not delivered again. Returns the new ids."""
    channels = Channel.objects.filter(organization_id=organization_id, enabled=True, events__contains=[kind])
    created: list[int] = []
    for channel in channels.only("pk", "organization_id"):
        try:
            with transaction.atomic():
                delivery = Delivery.objects.create(
                    organization_id=organization_id,
                    channel=channel,
                    event_kind=kind,
                    event_key=key[:200],
                    summary=summary[:500],
                    payload=payload,
                )
        except IntegrityError:
            continue  # this occurrence reached this channel already
        created.append(delivery.pk)
    _send_after_commit(created)
    return created


def channel_secrets_rotate(*, actor: Actor = None, batch_size: int = 200) -> int:
    """Re-encrypt every webhook signing secret under the first of INFERIA_FERNET_KEYS (with the providers'
    credentials, by `inferia secrets rotate`); returns how many were rewritten. Each batch is one transaction with its
    rows locked, audited as `notification_channel.secrets_rotate` naming the channels. Raises CredentialsError on a
    secret no configured key decrypts."""
    rewritten = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            rows = list(
                Channel.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .exclude(secret_encrypted="")
                .order_by("pk")
                .only("pk", "secret_encrypted")[:batch_size]
            )
            for channel in rows:
                token = credentials_encrypt(credentials_decrypt(channel.secret_encrypted).reveal())
                Channel.objects.filter(pk=channel.pk).update(secret_encrypted=token)
            if rows:
                audit_record(
                    action="notification_channel.secrets_rotate",
                    actor=actor,
                    changes={"channels": [channel.pk for channel in rows], "count": len(rows)},
                )
            rewritten += len(rows)
        if len(rows) < batch_size:
            return rewritten
        last_pk = rows[-1].pk
