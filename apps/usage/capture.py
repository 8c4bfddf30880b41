"""Captured prompts and answers (RequestCapture): stored by the usage worker from the usage events of organisations
that opted in, masked first, and pruned past each organisation's retention.

The mask comes from policies (the organisation's guardrail redactions), which registers it at start-up
(`capture_mask_register`): policies reads usage, so usage cannot import policies. With no mask registered nothing is
stored: a capture is never kept unmasked.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from apps.orgs.models import Organization
from apps.usage.events import CAPTURE_TEXT_MAX
from apps.usage.models import RequestCapture

logger = logging.getLogger(__name__)

# (organisation id, texts) -> the texts masked, in the same order.
CaptureMask = Callable[[int, list[str]], list[str]]
_masks: list[CaptureMask] = []


def capture_mask_register(mask: CaptureMask) -> None:
    """Make `mask` the one captures are masked with (registering again replaces it)."""
    _masks[:] = [mask]


def _text_clean(value: Any) -> str:
    """A captured text as it may be stored: a string, without NUL (PostgreSQL refuses it), at most CAPTURE_TEXT_MAX
    bytes. The gateway already bounds it; the worker trusts no event."""
    if not isinstance(value, str):
        return ""
    text = value.replace("\x00", "")
    if len(text) * 4 > CAPTURE_TEXT_MAX:
        text = text.encode()[:CAPTURE_TEXT_MAX].decode(errors="ignore")
    return text


def request_captures_store(events: list[dict[str, Any]], record_ids: dict[str, int]) -> int:
    """Store the masked captures of `events` whose usage records were just inserted (`record_ids`: request id ->
    record id), in the caller's transaction; only for organisations that still opt in now. Returns how many."""
    captured = [
        event
        for event in events
        if event.get("capture") and event.get("organization_id") is not None and event["request_id"] in record_ids
    ]
    if not captured:
        return 0
    if not _masks:
        logger.error("no capture mask is registered: %d captures dropped", len(captured))
        return 0
    mask = _masks[0]
    retention = dict(
        Organization.objects.filter(
            pk__in={event["organization_id"] for event in captured}, capture_prompts=True
        ).values_list("pk", "capture_retention_days")
    )
    by_organization: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in captured:
        if event["organization_id"] in retention:  # opted out since the request: not kept
            by_organization[event["organization_id"]].append(event)
    rows = []
    for organization_id, organization_events in by_organization.items():
        texts = [
            _text_clean(event["capture"].get(part) if isinstance(event["capture"], dict) else None)
            for event in organization_events
            for part in ("p", "a")
        ]
        try:
            masked = mask(organization_id, texts)
        except Exception:
            logger.exception("captures of organisation %s could not be masked: dropped", organization_id)
            continue
        days = timedelta(days=retention[organization_id])
        for index, event in enumerate(organization_events):
            rows.append(
                RequestCapture(
                    usage_record_id=record_ids[event["request_id"]],
                    organization_id=organization_id,
                    team_id=event.get("team_id"),
                    prompt=_text_clean(masked[2 * index]),
                    answer=_text_clean(masked[2 * index + 1]),
                    expires_at=datetime.fromtimestamp(event["started_at"], tz=UTC) + days,
                )
            )
    RequestCapture.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def request_captures_prune(*, now: datetime | None = None, batch: int = 5_000) -> int:
    """Delete the captures past their organisation's retention. Returns how many were deleted."""
    cutoff = now or timezone.now()
    deleted = 0
    while True:
        ids = list(RequestCapture.objects.filter(expires_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += RequestCapture.objects.filter(pk__in=ids).delete()[0]


__all__ = ["CaptureMask", "capture_mask_register", "request_captures_prune", "request_captures_store"]
