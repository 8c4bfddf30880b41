"""Storing usage: UsageRecord rows (one per request, idempotent on request_id) with their rollups, each key's
last use, the audit of policy denials and the captured prompts and answers (`apps.usage.capture`), in one transaction
per batch; replaying dead letters; pruning raw records past retention. Called by the worker (`apps.usage.stream`,
`apps.usage.tasks`), never by the web process.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import CharField
from django.utils import timezone

from apps.audit.actors import Actor
from apps.audit.models import AuditEvent
from apps.audit.services import AuditContext, audit_record
from apps.keys.models import ApiKey
from apps.usage.backlog import dead_letters_list, dead_letters_remove
from apps.usage.capture import request_captures_store
from apps.usage.events import ERROR_MESSAGE_MAX, USAGE_RECORD_COLUMNS, usage_event_decode
from apps.usage.models import UsageRecord
from apps.usage.rollups import usage_rollups_add
from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

# PostgreSQL down or the connection lost: nothing is wrong with the events, so none becomes a dead letter.
UNREACHABLE = (OperationalError, InterfaceError)


def usage_records_store(events: list[dict[str, Any]]) -> int:
    """Insert usage records for `events` (skipping request ids already stored) and add the new ones to the hourly
    rollups, in one transaction. Returns how many records were new."""
    rows = [_record_row(event) for event in events]
    table = UsageRecord._meta.db_table
    columns = ", ".join(USAGE_RECORD_COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(USAGE_RECORD_COLUMNS)) + ")"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(rows))} "  # noqa: S608 (constants)
            "ON CONFLICT (request_id) DO NOTHING RETURNING request_id, id",
            [value for row in rows for value in row],
        )
        inserted = dict(cursor.fetchall())
        new_events = [event for event in events if event["request_id"] in inserted]
        if new_events:
            usage_rollups_add(cursor, new_events)
            _keys_last_used(cursor, new_events)
            policy_denials_audit(new_events)
            request_captures_store(new_events, inserted)
    return len(inserted)


@dataclass(frozen=True, slots=True)
class DeadLettersReplayed:
    stored: int  # records written (or found already written)
    kept: int  # still refused: left where they were


def usage_dead_letters_replay(*, actor: Actor, context: AuditContext | None = None) -> DeadLettersReplayed:
    """Store the dead letters again, their strings repaired (control characters removed, cut to their column's
    length), so that a request once refused by the database still counts. Letters that still fail stay. Audited."""
    client = sync_redis()
    stored = kept = 0
    for letter in dead_letters_list(client, limit=100_000):
        try:
            event = _event_repaired(usage_event_decode(letter.event))
            usage_records_store([event])
        except UNREACHABLE:
            raise
        except Exception:
            logger.warning("dead letter %s still cannot be stored", letter.id, exc_info=True)
            kept += 1
            continue
        dead_letters_remove(client, [letter.id])
        stored += 1
    if stored or kept:
        audit_record(
            action="usage.dead_letters.replay",
            actor=actor,
            changes={"stored": stored, "kept": kept},
            context=context,
        )
    return DeadLettersReplayed(stored=stored, kept=kept)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _event_repaired(event: dict[str, Any]) -> dict[str, Any]:
    repaired = dict(event)
    for field in UsageRecord._meta.concrete_fields:
        value = repaired.get(field.attname)
        if isinstance(value, str) and isinstance(field, CharField):
            repaired[field.attname] = _CONTROL.sub("", value)[: field.max_length]
    return repaired


def policy_denials_audit(events: list[dict[str, Any]]) -> int:
    """One audit event per key, denial reason and minute for the policy denials among `events` (the gateway never
    writes audit rows itself). Runs in the caller's transaction, on events stored for the first time, so a batch
    read twice is audited once. Returns how many audit events were written."""
    groups: dict[tuple[int | None, int | None, str, datetime], list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["outcome"] == UsageRecord.Outcome.DENIED:
            minute = datetime.fromtimestamp(event["started_at"], tz=UTC).replace(second=0, microsecond=0)
            groups[(event["organization_id"], event["api_key_id"], event["error_code"], minute)].append(event)
    if not groups:
        return 0
    key_ids = {key_id for _org, key_id, _code, _minute in groups if key_id is not None}
    keys = {key.pk: key for key in ApiKey.objects.filter(pk__in=key_ids)}
    for (organization_id, key_id, code, minute), denied in sorted(groups.items(), key=lambda item: item[0][3]):
        audit_record(
            action="policy.denied",
            target=keys.get(key_id) if key_id is not None else None,
            organization_id=organization_id,
            changes={
                "key_id": key_id,
                "reason": code,
                "minute": minute.isoformat(),
                "requests": len(denied),
                "models": sorted({event["model"] for event in denied}),
            },
            outcome=AuditEvent.Outcome.DENIED,
            context=AuditContext(request_id=denied[0]["request_id"]),
        )
    return len(groups)


def _record_row(event: dict[str, Any]) -> tuple[Any, ...]:
    values = dict(event)
    values["started_at"] = datetime.fromtimestamp(event["started_at"], tz=UTC)
    values["guardrails"] = json.dumps(event.get("guardrails") or [])
    values["client_request_id"] = event.get("client_request_id") or ""
    # The message can quote what the caller sent (an unknown model's name): no NUL, and bounded, whatever came.
    values["error_message"] = str(event.get("error_message") or "").replace("\x00", "")[:ERROR_MESSAGE_MAX]
    return tuple(values.get(column) for column in USAGE_RECORD_COLUMNS)


def _keys_last_used(cursor: Any, events: list[dict[str, Any]]) -> None:
    """Move each key's `last_used_at` forward to its newest request in the batch: /v1 never writes to PostgreSQL,
    so the flush records it (one UPDATE per batch)."""
    newest: dict[int, float] = {}
    for event in events:
        key_id = event["api_key_id"]
        if key_id is not None and event["started_at"] > newest.get(key_id, 0.0):
            newest[key_id] = event["started_at"]
    if not newest:
        return
    table = ApiKey._meta.db_table
    values = ", ".join(["(%s::bigint, %s::timestamptz)"] * len(newest))
    # The same conversion as the record's `started_at` (PostgreSQL's to_timestamp() rounds microseconds otherwise).
    cursor.execute(
        f"UPDATE {table} AS k SET last_used_at = v.at FROM (VALUES {values}) AS v(id, at) "  # noqa: S608 (constants)
        "WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
        [value for key_id, at in newest.items() for value in (key_id, datetime.fromtimestamp(at, tz=UTC))],
    )


def usage_records_prune(*, older_than_days: int | None = None, batch: int = 10_000) -> int:
    """Delete raw usage records past retention (the hourly rollups stay). Returns how many were deleted."""
    days = settings.INFERIA_USAGE_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(UsageRecord.objects.filter(started_at__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += UsageRecord.objects.filter(id__in=ids).delete()[0]
