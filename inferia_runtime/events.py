"""Domain events inside one process: a lower layer says what happened, a higher layer that cares reacts, and the
lower one never imports the higher one.

An event is a small frozen dataclass declared by the domain that owns it (compute's are in apps/compute/events.py).
The owner calls `event_publish(event)` where the change is written; the event reaches its subscribers once the
current transaction commits (at once outside a transaction) and never if it rolls back, so a subscriber never acts on
a change that did not happen. Subscribers register in their app's `AppConfig.ready` with `event_subscribe`.

A subscriber that raises is logged and skipped: the change is already committed, and the other subscribers (a
console push, a cache invalidation) must still run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction

logger = logging.getLogger(__name__)

EventT = TypeVar("EventT")

_subscribers: dict[type, list[Callable[[Any], None]]] = {}


def event_subscribe(event_type: type[EventT], handler: Callable[[EventT], None]) -> None:
    """Call `handler` with every `event_type` event published from now on. Subscribing twice is subscribing once
    (`ready()` may run again in tests)."""
    handlers = _subscribers.setdefault(event_type, [])
    if handler not in handlers:
        handlers.append(handler)


def event_unsubscribe(event_type: type[EventT], handler: Callable[[EventT], None]) -> None:
    """Stop calling `handler` with `event_type` events."""
    handlers = _subscribers.get(event_type, [])
    if handler in handlers:
        handlers.remove(handler)


def event_publish(event: object) -> None:
    """Deliver `event` to the subscribers of its type once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: event_deliver(event))


def event_deliver(event: object) -> None:
    """Call every subscriber of `event`'s type now, in the order they subscribed; one that raises is logged."""
    for handler in tuple(_subscribers.get(type(event), ())):
        try:
            handler(event)
        except Exception:
            logger.exception("subscriber %s failed on %r", getattr(handler, "__qualname__", handler), event)
