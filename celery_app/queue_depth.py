"""How many tasks wait in each of the worker's queues, read from the broker when asked (the `/metrics` scrape).

Asked through kombu rather than by reading the broker's keys, so it holds for any broker URL Celery accepts (Redis,
Sentinel). An empty Redis queue has no key at all, which kombu reports as a missing queue: that is a length of 0.
"""

from __future__ import annotations

from typing import Any

from kombu.exceptions import ChannelError, OperationalError

from celery_app.app import QUEUE_NAMES, app

# The scrape must not hang on a broker that is down: one connection attempt, bounded.
_CONNECT_TIMEOUT_S = 2


def queue_depths() -> dict[str, int] | None:
    """Tasks waiting in each queue by name, or None when the broker cannot be reached."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=_CONNECT_TIMEOUT_S)
            channel: Any = connection.default_channel  # kombu types it as the bare channel protocol
            depths: dict[str, int] = {}
            for name in QUEUE_NAMES:
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    depths[name] = 0
            return depths
    except (OperationalError, OSError):
        return None
