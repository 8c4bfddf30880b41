"""What the usage flush has not stored (yet): the stream's lag, and the dead letters.

Dead letters are usage events the worker could not store, kept in a Redis stream of their own until someone
replays them.

A usage event that PostgreSQL refuses (or that cannot be decoded) must neither block the rest of its batch nor be
dropped: the flush stores its batch row by row and moves each row that still fails here, with the reason. The
stream is never trimmed; `inferia usage dead-letters`, `GET /api/usage/dead-letters/`, a metric and a notice on
the console show what it holds, and a replay stores the events with their strings repaired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

REASON_MAX = 500


def dead_letter_stream() -> str:
    return f"{settings.INFERIA_USAGE_STREAM}:dead"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One usage event that could not be stored: where it was in the usage stream, why, and its raw payload."""

    id: str
    source_id: str
    failed_at: float
    reason: str
    event: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "failed_at": self.failed_at,
            "reason": self.reason,
            "event": self.event,
        }


def dead_letter_add(client: redis.Redis, *, source_id: bytes | str, raw: bytes | str | None, reason: str) -> None:
    """Keep an event the flush could not store (the caller acknowledges the original afterwards)."""
    client.xadd(
        dead_letter_stream(),
        {
            "source": source_id,
            "at": repr(time.time()),
            "reason": reason[:REASON_MAX],
            "e": raw if raw is not None else b"",
        },
    )


def dead_letters_count(client: redis.Redis) -> int:
    return int(client.xlen(dead_letter_stream()))


def dead_letters_list(client: redis.Redis, *, limit: int = 100) -> list[DeadLetter]:
    """The oldest `limit` dead letters."""
    entries: Any = client.xrange(dead_letter_stream(), count=limit)
    return [_letter(entry_id, fields) for entry_id, fields in entries]


def dead_letters_remove(client: redis.Redis, ids: list[str]) -> None:
    if ids:
        client.xdel(dead_letter_stream(), *ids)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _letter(entry_id: bytes | str, fields: dict[bytes, bytes]) -> DeadLetter:
    return DeadLetter(
        id=_text(entry_id),
        source_id=_text(fields.get(b"source")),
        failed_at=float(_text(fields.get(b"at")) or 0),
        reason=_text(fields.get(b"reason")),
        event=_text(fields.get(b"e")),
    )


@dataclass(frozen=True, slots=True)
class UsageBacklog:
    """How far behind the usage flush is: events waiting in the stream, the age of the oldest, and dead letters."""

    waiting: int
    lag_seconds: float
    dead_letters: int


def usage_backlog(client: redis.Redis, *, now: float | None = None) -> UsageBacklog:
    """Stored events are deleted from the stream, so its oldest entry is the oldest one not stored yet; its id
    carries the time it was appended."""
    stream = settings.INFERIA_USAGE_STREAM
    with client.pipeline(transaction=False) as pipe:
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
        pipe.xlen(dead_letter_stream())
        waiting, oldest, dead = pipe.execute()
    lag = 0.0
    if oldest:
        appended_ms = int(_text(oldest[0][0]).split("-", 1)[0])
        lag = max(0.0, (time.time() if now is None else now) - appended_ms / 1000)
    return UsageBacklog(waiting=int(waiting), lag_seconds=lag, dead_letters=int(dead))
