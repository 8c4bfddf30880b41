"""Writing the audit chain. Every management change calls `audit_record` inside its own transaction."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.models import AuditChainHead, AuditCheckpoint, AuditEvent
from inferia_runtime.client_address import client_address
from inferia_runtime.errors import DomainRefusal

ModelT = TypeVar("ModelT", bound=models.Model)

SYSTEM_ACTOR = "system"
_MASK = "********"
_SECRET_FIELD_HINTS = ("password", "secret", "token", "credential", "private_key", "api_key")


@dataclass(frozen=True)
class AuditContext:
    """Where a change came from: filled from the HTTP request, the CLI, or left empty for system work."""

    ip_address: str | None = None
    user_agent: str = ""
    request_id: str = ""

    @classmethod
    def from_request(cls, request: Any | None) -> AuditContext:
        """The client's address (through trusted proxies only), user agent and request id of an HTTP request
        (Django's or DRF's); empty without one."""
        if request is None:
            return cls()
        # PostgreSQL text cannot hold NUL: a header carrying one would otherwise fail the audited change itself.
        return cls(
            ip_address=client_address(request),
            user_agent=request.META.get("HTTP_USER_AGENT", "").replace("\x00", "")[:500],
            request_id=request.META.get("HTTP_X_REQUEST_ID", "").replace("\x00", "")[:64],
        )


def mask_secrets(data: Any) -> Any:
    """A copy of `data` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(data, dict):
        return {
            key: _MASK if any(hint in str(key).lower() for hint in _SECRET_FIELD_HINTS) else mask_secrets(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [mask_secrets(item) for item in data]
    return data


def canonical_ip(value: str | None) -> str | None:
    """One spelling per address, so that the hash does not depend on how PostgreSQL's inet prints it back."""
    if not value:
        return None
    address = ipaddress.ip_address(str(value))
    if isinstance(address, ipaddress.IPv6Address):
        return str(address.ipv4_mapped) if address.ipv4_mapped else address.exploded
    return str(address)


def json_roundtrip(data: Any) -> Any:
    """`data` as it comes back from a JSONB column (dates as strings, tuples as lists), so hashes match on read."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def audit_diff(
    *, before: dict[str, Any] | None, after: dict[str, Any] | None, fields: Iterable[str] | None = None
) -> dict[str, Any]:
    """The changed fields between two snapshots, as `{field: {"before": ..., "after": ...}}`, secrets masked.

    A creation has `before=None`, a deletion `after=None`; then every field is listed."""
    before, after = before or {}, after or {}
    names = list(fields) if fields is not None else sorted(set(before) | set(after))
    diff = {
        name: {"before": before.get(name), "after": after.get(name)}
        for name in names
        if before.get(name) != after.get(name)
    }
    masked: dict[str, Any] = mask_secrets(json_roundtrip(diff))
    return masked


def event_digest(*, prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash that chains an event to its predecessor; `audit_verify` recomputes it."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def chained_fields(event: AuditEvent) -> dict[str, Any]:
    """The content an event's hash covers."""
    return {
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "organization_id": event.organization_id,
        "actor_user_id": event.actor_user_id,
        "actor_key_id": event.actor_key_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "changes": event.changes,
        "ip_address": canonical_ip(event.ip_address),
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "outcome": event.outcome,
    }


def audit_record(
    *,
    action: str,
    actor: Actor = None,
    target: models.Model | None = None,
    organization_id: int | None = None,
    changes: dict[str, Any] | None = None,
    outcome: str = AuditEvent.Outcome.SUCCESS,
    context: AuditContext | None = None,
) -> AuditEvent:
    """Append one event to the chain. `actor` is a User, an API key, or None for the system.

    Runs in the caller's transaction (or its own): the chain head row is locked until commit, which keeps
    sequence numbers gapless and the chain linear even with many writers.
    """
    context = context or AuditContext()
    # A key is whatever `actor_key` points at: audit names no app above it.
    key_model: Any = AuditEvent._meta.get_field("actor_key").related_model
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
        actor_user_id = actor_key_id = None
        if isinstance(actor, key_model):
            actor_key_id, actor_label = actor.pk, f"key:{actor.prefix}"
        elif actor is not None:
            actor_user_id, actor_label = actor.pk, str(actor)
        else:
            actor_label = SYSTEM_ACTOR
        if organization_id is None and target is not None:
            organization_id = getattr(target, "organization_id", None)
            if organization_id is None and target._meta.label == "orgs.Organization":
                organization_id = target.pk
        event = AuditEvent(
            seq=head.seq + 1,
            occurred_at=timezone.now(),
            organization_id=organization_id,
            actor_user_id=actor_user_id,
            actor_key_id=actor_key_id,
            actor_label=actor_label[:300],
            action=action,
            target_type=target._meta.label_lower if target is not None else "",
            target_id=str(target.pk) if target is not None else "",
            target_repr=str(target)[:300] if target is not None else "",
            changes=json_roundtrip(mask_secrets(changes or {})),
            ip_address=canonical_ip(context.ip_address),
            user_agent=context.user_agent[:500],
            request_id=context.request_id,
            outcome=outcome,
            prev_hash=head.hash,
        )
        event.hash = event_digest(prev_hash=head.hash, fields=chained_fields(event))
        event.save(force_insert=True)
        head.seq, head.hash = event.seq, event.hash
        head.save(update_fields=["seq", "hash"])
    return event


@transaction.atomic
def audit_checkpoint_take(
    *, actor: Actor = None, taken_by: str = "", context: AuditContext | None = None
) -> AuditCheckpoint:
    """Copy the chain head into a checkpoint row. Called by beat (`actor=None`) and on demand by a person, whose
    request is itself recorded first so that the checkpoint covers it. Beat skips when the head has not moved."""
    if actor is not None:
        audit_record(action="audit.checkpoint", actor=actor, context=context)
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(id=1)
    latest = AuditCheckpoint.objects.order_by("-seq", "-id").first()
    if actor is None and latest is not None and latest.seq == head.seq and latest.hash == head.hash:
        return latest
    label = taken_by or (str(actor) if actor is not None else SYSTEM_ACTOR)
    return AuditCheckpoint.objects.create(seq=head.seq, hash=head.hash, taken_by=label[:300])


def update_begin(
    obj: ModelT,
    *,
    changes: dict[str, Any],
    allowed: Iterable[str],
    snapshot: Callable[[ModelT], dict[str, Any]] | None = None,
) -> tuple[ModelT, dict[str, Any]]:
    """The first half of every audited whitelist update, inside the caller's transaction: refuse a field outside
    `allowed`, lock and re-read the stored row (so that concurrent edits queue and the diff is against what is
    stored, not against a caller's stale or already-edited copy), and set the changed fields on it. Many-to-many
    changes are left to the caller.

    Returns the locked row and its snapshot before the change (`snapshot(row)`, by default `audit_snapshot` of the
    allowed fields); the caller validates, saves and records `audit_diff(before=..., after=...)`."""
    allowed = tuple(allowed)
    unknown = set(changes) - set(allowed)
    if unknown:
        raise DomainRefusal(f"cannot change {', '.join(sorted(unknown))}")
    row = type(obj)._base_manager.select_for_update(of=("self",)).get(pk=obj.pk)
    before = snapshot(row) if snapshot is not None else audit_snapshot(row, allowed)
    concrete = {field.name for field in row._meta.concrete_fields}
    for name, value in changes.items():
        if name in concrete:
            setattr(row, name, value)
    return row, before


def audited_update(
    obj: ModelT,
    *,
    changes: dict[str, Any],
    allowed: Iterable[str],
    action: str,
    actor: Actor,
    context: AuditContext | None = None,
) -> ModelT:
    """A whole audited whitelist update of plain fields, inside the caller's transaction: `update_begin`, save the
    changed fields, and record `action` with the before/after diff. Returns the saved row."""
    allowed = tuple(allowed)
    row, before = update_begin(obj, changes=changes, allowed=allowed)
    row.save(update_fields=list(changes))
    audit_record(
        action=action,
        actor=actor,
        target=row,
        changes=audit_diff(before=before, after=audit_snapshot(row, allowed)),
        context=context,
    )
    return row


def audit_snapshot(obj: models.Model, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The current values of `obj`'s concrete fields (foreign keys as ids), JSON-ready: the before or after of
    a change, for `audit_diff`. Encrypted and hashed fields are left out (they would be masked anyway)."""
    names = set(fields) if fields is not None else None
    snapshot: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if names is not None and field.name not in names:
            continue
        if field.name.endswith(("_encrypted", "_hash")):
            continue
        snapshot[field.name] = field.value_from_object(obj)
    if names is not None:
        for field in obj._meta.many_to_many:
            if field.name in names and obj.pk is not None:
                snapshot[field.name] = sorted(getattr(obj, field.name).values_list("pk", flat=True))
    stored: dict[str, Any] = json_roundtrip(snapshot)
    return stored
