"""Reading the audit log: filtered event lists, exports to CSV and JSON Lines, checkpoint exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet

from apps.audit.exports import csv_cell, export_rows
from apps.audit.models import AuditCheckpoint, AuditEvent

EXPORT_FIELDS = [
    "seq",
    "occurred_at",
    "organization_id",
    "actor_user_id",
    "actor_key_id",
    "actor_label",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "changes",
    "ip_address",
    "user_agent",
    "request_id",
    "outcome",
    "prev_hash",
    "hash",
]


def audit_event_filter(
    *,
    events: QuerySet[AuditEvent],
    actor: str = "",
    action: str = "",
    target_type: str = "",
    target_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Narrow an already-restricted queryset by actor label, action (prefix), object and date range."""
    if actor:
        events = events.filter(actor_label__icontains=actor)
    if action:
        events = events.filter(action__startswith=action)
    if target_type:
        events = events.filter(target_type=target_type)
    if target_id:
        events = events.filter(target_id=target_id)
    if since:
        events = events.filter(occurred_at__gte=since)
    if until:
        events = events.filter(occurred_at__lt=until)
    return events


def _batches(events: QuerySet[AuditEvent]) -> Iterator[list[dict[str, Any]]]:
    return export_rows(events.order_by("seq").values(*EXPORT_FIELDS))


def audit_events_jsonl(*, events: QuerySet[AuditEvent]) -> Iterator[str]:
    """The events as JSON Lines, oldest first, with their hashes so a copy can be checked later; one chunk per batch
    of rows (see `apps.audit.exports`)."""
    for batch in _batches(events):
        yield "".join(json.dumps(row, cls=DjangoJSONEncoder, sort_keys=True) + "\n" for row in batch)


def audit_events_csv(*, events: QuerySet[AuditEvent]) -> Iterator[str]:
    """The events as CSV, oldest first; `changes` is a JSON string in its column, and text that a spreadsheet
    would run as a formula is neutralised (`csv_cell`). One chunk per batch of rows."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for batch in _batches(events):
        for row in batch:
            row["changes"] = json.dumps(row["changes"], cls=DjangoJSONEncoder, sort_keys=True)
            row["occurred_at"] = row["occurred_at"].isoformat()
            writer.writerow({name: csv_cell(value) for name, value in row.items()})
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def audit_checkpoints_jsonl() -> Iterator[str]:
    """Every checkpoint as JSON Lines, for keeping outside the database; `audit_verify --checkpoints` reads it."""
    rows = AuditCheckpoint.objects.order_by("seq", "id").values("seq", "hash", "created_at", "taken_by")
    for row in rows.iterator(chunk_size=2000):
        yield json.dumps(row, cls=DjangoJSONEncoder, sort_keys=True) + "\n"
