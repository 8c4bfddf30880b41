"""Turning the usage stream into rows: UsageRecord (one per request, idempotent on request_id) and hourly
UsageRollup totals, written by the worker, never by the web process.

The stream is read with a consumer group. A batch is acknowledged (and deleted from the stream) only after its
transaction committed; a worker that dies before that leaves the batch pending, and the next drain claims it
back. Re-reading is harmless: rows already inserted are skipped (ON CONFLICT DO NOTHING ... RETURNING tells which
were new), and only new rows feed the rollups, so totals never count a request twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import CharField
from django.utils import timezone

from apps.audit.models import AuditEvent, UsageRecord
from apps.audit.rollups import usage_rollups_add
from apps.audit.services import AuditContext, audit_record
from apps.audit.usage_backlog import dead_letter_add, dead_letters_list, dead_letters_remove
from apps.gateway.metering import EVENT_FIELD, usage_event_decode
from apps.keys.cache import NEGATIVE_VALUE, TOMBSTONE_TTL_S, key_cache_purge_all, principal_cache_key
from apps.keys.models import ApiKey
from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

USAGE_GROUP = "usage-writers"
BATCH_SIZE = 500
# A pending batch idle this long belongs to a worker that died: another one takes it over.
CLAIM_IDLE_MS = 30_000

_RECORD_COLUMNS = (
    "request_id",
    "client_request_id",
    "started_at",
    "organization_id",
    "team_id",
    "api_key_id",
    "deployment_id",
    "replica_id",
    "endpoint",
    "model",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
    "ttft_ms",
    "latency_ms",
    "status_code",
    "outcome",
    "error_code",
    "estimated",
    "streamed",
    "guardrails",
)


def usage_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _group_ensure(client: redis.Redis, stream: str) -> None:
    try:
        client.xgroup_create(stream, USAGE_GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def usage_stream_drain(
    *, consumer: str | None = None, max_batches: int = 100, claim_idle_ms: int = CLAIM_IDLE_MS
) -> int:
    """Store what the usage stream holds: first batches abandoned by dead workers, then new events. Returns how
    many events were handled (stored or already there)."""
    client = sync_redis()
    stream = settings.INFERIA_USAGE_STREAM
    consumer = consumer or usage_consumer_name()
    _group_ensure(client, stream)
    handled = 0
    start = "0-0"
    for _ in range(max_batches):
        # Redis 7 answers (next, claimed, deleted); Redis 6.2 (the embedded default's) only (next, claimed).
        start, claimed, *_deleted = client.xautoclaim(
            stream, USAGE_GROUP, consumer, min_idle_time=claim_idle_ms, start_id=start, count=BATCH_SIZE
        )
        handled += _batch_store(client, stream, claimed)
        if start in (b"0-0", "0-0"):
            break
    for _ in range(max_batches):
        answer: Any = client.xreadgroup(USAGE_GROUP, consumer, {stream: ">"}, count=BATCH_SIZE)
        if not answer:
            break
        messages = answer[0][1]
        if not messages:
            break
        handled += _batch_store(client, stream, messages)
    return handled


def _batch_store(client: redis.Redis, stream: str, messages: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
    """Store a batch in one transaction; when PostgreSQL refuses it, row by row, so that one bad event (of any
    tenant) never holds back the others. What still fails, or cannot be decoded, becomes a dead letter. A database
    that cannot be reached raises instead: the batch stays pending and is read again."""
    if not messages:
        return 0
    decoded: list[tuple[bytes, bytes | None, dict[str, Any]]] = []
    for message_id, fields in messages:
        raw = fields.get(EVENT_FIELD.encode()) if fields else None
        try:
            decoded.append((message_id, raw, usage_event_decode(raw)))  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError) as error:
            logger.error("usage event %s cannot be decoded: kept as a dead letter", message_id)
            dead_letter_add(client, source_id=message_id, raw=raw, reason=f"malformed event: {error}")
    if decoded:
        try:
            usage_records_store([event for _id, _raw, event in decoded])
        except _UNREACHABLE:
            raise
        except Exception:
            logger.warning("a usage batch of %d events was refused; storing it event by event", len(decoded))
            _events_store_one_by_one(client, decoded)
    ids = [message_id for message_id, _fields in messages]
    client.xack(stream, USAGE_GROUP, *ids)
    client.xdel(stream, *ids)
    return len(messages)


# PostgreSQL down or the connection lost: nothing is wrong with the events, so none becomes a dead letter.
_UNREACHABLE = (OperationalError, InterfaceError)


def _events_store_one_by_one(client: redis.Redis, decoded: list[tuple[bytes, bytes | None, dict[str, Any]]]) -> None:
    for message_id, raw, event in decoded:
        try:
            usage_records_store([event])
        except _UNREACHABLE:
            raise
        except Exception as error:
            logger.error("usage event %s refused by the database: kept as a dead letter", message_id)
            dead_letter_add(client, source_id=message_id, raw=raw, reason=f"{type(error).__name__}: {error}")


def usage_records_store(events: list[dict[str, Any]]) -> int:
    """Insert usage records for `events` (skipping request ids already stored) and add the new ones to the hourly
    rollups, in one transaction. Returns how many records were new."""
    rows = [_record_row(event) for event in events]
    table = UsageRecord._meta.db_table
    columns = ", ".join(_RECORD_COLUMNS)
    placeholders = "(" + ", ".join(["%s"] * len(_RECORD_COLUMNS)) + ")"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(rows))} "  # noqa: S608 (constants)
            "ON CONFLICT (request_id) DO NOTHING RETURNING request_id",
            [value for row in rows for value in row],
        )
        inserted = {request_id for (request_id,) in cursor.fetchall()}
        new_events = [event for event in events if event["request_id"] in inserted]
        if new_events:
            _rollups_add(cursor, new_events)
            _keys_last_used(cursor, new_events)
            policy_denials_audit(new_events)
    return len(inserted)


@dataclass(frozen=True, slots=True)
class DeadLettersReplayed:
    stored: int  # records written (or found already written)
    kept: int  # still refused: left where they were


def usage_dead_letters_replay(*, actor: Any, context: AuditContext | None = None) -> DeadLettersReplayed:
    """Store the dead letters again, their strings repaired (control characters removed, cut to their column's
    length), so that a request once refused by the database still counts. Letters that still fail stay. Audited."""
    client = sync_redis()
    stored = kept = 0
    for letter in dead_letters_list(client, limit=100_000):
        try:
            event = _event_repaired(usage_event_decode(letter.event))
            usage_records_store([event])
        except _UNREACHABLE:
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
    return tuple(values.get(column) for column in _RECORD_COLUMNS)


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
    values = ", ".join(["(%s::bigint, to_timestamp(%s))"] * len(newest))
    cursor.execute(
        f"UPDATE {table} AS k SET last_used_at = v.at FROM (VALUES {values}) AS v(id, at) "  # noqa: S608 (constants)
        "WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
        [value for pair in newest.items() for value in pair],
    )


def _rollups_add(cursor: Any, events: list[dict[str, Any]]) -> None:
    usage_rollups_add(cursor, events)


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


def organization_keys_purge(*, organization_id: int, active: bool) -> None:
    """Make every gateway look an organisation's keys up again after it was deactivated (its keys then fail) or
    reactivated. Deactivation leaves tombstones in Redis, so that no gateway can put a stale principal back; then
    one message clears every process's in-memory keys. A Redis failure is logged: the caches' TTLs bound it."""
    hashes = list(ApiKey.objects.filter(organization_id=organization_id).values_list("secret_hash", flat=True))
    try:
        client = sync_redis()
        with client.pipeline(transaction=False) as pipe:
            for secret_hash in hashes:
                if active:
                    pipe.delete(principal_cache_key(secret_hash))
                else:
                    pipe.set(principal_cache_key(secret_hash), NEGATIVE_VALUE, ex=TOMBSTONE_TTL_S)
            pipe.execute()
    except redis.RedisError:
        logger.exception("could not purge the keys of organisation %s from Redis", organization_id)
    key_cache_purge_all()
