"""The usage stream's drain: the worker reads the events the gateways appended, in batches, with a consumer group,
and stores them (`apps.usage.services.usage_records_store`); the web process never writes usage rows.

A batch is acknowledged (and deleted from the stream) only after its transaction committed; a worker that dies
before that leaves the batch pending, and the next drain claims it back: after CLAIM_IDLE_MS, or at once after a
failover (a promoted replica holds the batches the old master had handed out, to workers that lost them).
Re-reading is harmless: rows already inserted are skipped, and only new rows feed the rollups, so totals never count
a request twice. An event that cannot be decoded, or that PostgreSQL refuses even alone, becomes a dead letter
(`apps.usage.backlog`).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import redis
from django.conf import settings

from apps.usage.backlog import dead_letter_add
from apps.usage.events import EVENT_FIELD, usage_event_decode
from apps.usage.services import UNREACHABLE, usage_records_store
from inferia_runtime.redis_clients import redis_failover_seen, sync_redis

logger = logging.getLogger(__name__)

USAGE_GROUP = "usage-writers"
BATCH_SIZE = 500
# A pending batch idle this long belongs to a worker that died: another one takes it over.
CLAIM_IDLE_MS = 30_000


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
    if redis_failover_seen(client, watcher="usage"):
        logger.warning("the Redis master changed: claiming every pending usage event")
        claim_idle_ms = 0
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
        except UNREACHABLE:
            raise
        except Exception:
            logger.warning("a usage batch of %d events was refused; storing it event by event", len(decoded))
            _events_store_one_by_one(client, decoded)
    ids = [message_id for message_id, _fields in messages]
    client.xack(stream, USAGE_GROUP, *ids)
    client.xdel(stream, *ids)
    return len(messages)


def _events_store_one_by_one(client: redis.Redis, decoded: list[tuple[bytes, bytes | None, dict[str, Any]]]) -> None:
    for message_id, raw, event in decoded:
        try:
            usage_records_store([event])
        except UNREACHABLE:
            raise
        except Exception as error:
            logger.error("usage event %s refused by the database: kept as a dead letter", message_id)
            dead_letter_add(client, source_id=message_id, raw=raw, reason=f"{type(error).__name__}: {error}")
