"""Celery beat that sends the schedule from one process only, however many run: a lease in Redis.

Two beats would send every periodic task twice (two flushes, two reconciles racing). `replicas: 1` does not rule
that out (a rolling update, a node that looks dead but is not), so each beat ticks only while it holds the lease
`BEAT_LOCK_KEY`, renewed at every tick; another beat waits, and takes over within `LEASE_S` of the holder's death
(at once when the holder stops cleanly: it gives the lease back).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import PersistentScheduler

from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

BEAT_LOCK_KEY = "inferia:beat:lease"
LEASE_S = 15.0
# A tick (and so a renewal) at least this often, whatever the schedule says: well within the lease.
TICK_MAX_S = 3.0
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class LeasedScheduler(PersistentScheduler):
    """`PersistentScheduler` that sends due tasks only while this process holds the beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._holding = False
        self._first = True
        self._redis = sync_redis()
        super().__init__(*args, **kwargs)
        self.max_interval = min(self.max_interval, TICK_MAX_S)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._lease_hold():
            return TICK_MAX_S
        return float(super().tick(*args, **kwargs))

    def close(self) -> None:
        super().close()
        if self._holding:
            try:
                self._redis.eval(_RELEASE, 1, BEAT_LOCK_KEY, self._holder)
            except redis.RedisError:
                logger.warning("could not give the beat lease back; it runs out in %.0f s", LEASE_S)

    def _lease_hold(self) -> bool:
        """Renew the lease when this process holds it, take it when nobody does; whether it holds it now."""
        ttl_ms = int(LEASE_S * 1000)
        try:
            if self._holding and self._redis.eval(_RENEW, 1, BEAT_LOCK_KEY, self._holder, ttl_ms):
                return True
            held = bool(self._redis.set(BEAT_LOCK_KEY, self._holder, nx=True, px=ttl_ms))
        except redis.RedisError:
            # Without Redis nothing proves the lease is still ours: stop sending rather than risk two beats.
            held = False
        if held != self._holding or self._first:
            if held:
                logger.warning("beat: this process (%s) sends the schedule", self._holder)
            else:
                logger.warning("beat: another process holds the lease; this one (%s) stands by", self._holder)
        self._holding, self._first = held, False
        return held
