"""Celery tasks of the notifications app: sending a delivery (with exponential back-off between attempts) and the
delayed check that a replica is still unhealthy."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from apps.notifications.models import Delivery
from apps.notifications.transport import delivery_transmit


def retry_delay_s(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: the base, doubled each time."""
    return float(settings.INFERIA_NOTIFY_RETRY_BASE_S * (2 ** max(0, attempts - 1)))


@shared_task(bind=True, acks_late=True, time_limit=120, max_retries=None)
def delivery_send(self: Any, delivery_id: int) -> str:
    """Make one attempt at a pending delivery; on failure, retry later (exponential back-off) until
    INFERIA_NOTIFY_MAX_ATTEMPTS attempts, then record it failed. Returns the delivery's status."""
    delivery = Delivery.objects.select_related("channel").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != Delivery.Status.PENDING:
        return delivery.status if delivery else "gone"
    # Claim this attempt: a duplicate message (a redelivery after a lost ack) finds the count moved and stops.
    claimed = Delivery.objects.filter(
        pk=delivery.pk, status=Delivery.Status.PENDING, attempts=delivery.attempts
    ).update(attempts=F("attempts") + 1, last_attempt_at=timezone.now())
    if claimed != 1:
        return "claimed elsewhere"
    attempts = delivery.attempts + 1
    outcome = delivery_transmit(delivery)
    if outcome.ok:
        Delivery.objects.filter(pk=delivery.pk).update(
            status=Delivery.Status.SENT, response_status=outcome.status, last_error="", sent_at=timezone.now()
        )
        return Delivery.Status.SENT
    final = attempts >= settings.INFERIA_NOTIFY_MAX_ATTEMPTS
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.FAILED if final else Delivery.Status.PENDING,
        response_status=outcome.status,
        last_error=outcome.error[:500],
    )
    if final:
        return Delivery.Status.FAILED
    raise self.retry(countdown=retry_delay_s(attempts))


@shared_task(acks_late=True, time_limit=60)
def replica_unhealthy_check(replica_id: int, since: str) -> int:
    """Notify if the replica that became unhealthy at `since` (ISO time) still is; returns deliveries made."""
    from apps.notifications.subscribers import replica_still_unhealthy_notify

    return replica_still_unhealthy_notify(replica_id=replica_id, since=since)
