"""Choosing a replica: least outstanding requests weighted by the engine's reported load, optional session
affinity, and a circuit breaker per replica.

In-flight counts and breakers are this process's own (several web processes may disagree; that is fine, the
engines' load as scraped into Redis is what they share).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from django.conf import settings

from apps.gateway.catalog import DeploymentRoute, ReplicaTarget

# Weights that turn an engine's reported load into "outstanding requests": a waiting request is worse than one of
# ours in flight (it has not even started), and a full KV cache means new requests will queue.
WAITING_WEIGHT = 2.0
KV_CACHE_WEIGHT = 8.0
# Session affinity gives way when its replica has this many more outstanding requests than the least loaded one.
AFFINITY_SLACK = 8.0
# Breaker states as `Router.choose` sees a replica.
_CLOSED, _BROKEN, _PROBE = "closed", "broken", "probe"


@dataclass(slots=True)
class Breaker:
    """Consecutive failures of one replica; open (skipped) until `open_until`, then one probe is let through."""

    failures: int = 0
    open_until: float = 0.0  # monotonic; 0 when closed
    opened_at_wall: float = 0.0


class Router:
    """One process's routing state."""

    def __init__(self) -> None:
        self.inflight: dict[int, int] = {}
        self.breakers: dict[int, Breaker] = {}
        self._turn = 0

    def choose(
        self, route: DeploymentRoute, *, tried: tuple[int, ...] = (), session: str | None = None
    ) -> ReplicaTarget | None:
        """The replica for the next attempt, or None when every replica was tried or is circuit-broken."""
        replicas = route.replicas
        count = len(replicas)
        if count == 0:
            return None
        if count == 1 and not tried and not self.breakers:
            return replicas[0]  # the common single-replica case, without the scoring
        self._turn += 1
        best: ReplicaTarget | None = None
        best_score = 0.0
        candidates: list[tuple[ReplicaTarget, float]] = []
        for offset in range(count):
            replica = replicas[(self._turn + offset) % count]  # rotate so that ties spread
            if replica.id in tried:
                continue
            state = self._state(replica)
            if state == _BROKEN:
                continue
            if state == _PROBE:
                # Half-open: this request probes it; the others keep away until it has answered.
                self.breakers[replica.id].open_until = time.monotonic() + settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS
                return replica
            load = WAITING_WEIGHT * replica.waiting + KV_CACHE_WEIGHT * replica.kv_cache
            score = self.inflight.get(replica.id, 0) + load
            candidates.append((replica, score))
            if best is None or score < best_score:
                best, best_score = replica, score
        if session is None or best is None or len(candidates) == 1:
            return best
        # Rendezvous hashing: the same session lands on the same replica in every process, and only the sessions
        # of a replica that goes away move.
        preferred, preferred_score = max(candidates, key=lambda item: zlib.crc32(f"{session}:{item[0].id}".encode()))
        return preferred if preferred_score <= best_score + AFFINITY_SLACK else best

    def started(self, replica: ReplicaTarget) -> None:
        self.inflight[replica.id] = self.inflight.get(replica.id, 0) + 1

    def finished(self, replica: ReplicaTarget) -> None:
        self.inflight[replica.id] -= 1

    def succeeded(self, replica: ReplicaTarget) -> None:
        if replica.id in self.breakers:
            del self.breakers[replica.id]

    def failed(self, replica: ReplicaTarget) -> None:
        """Count a failure before the first byte; enough in a row open the breaker."""
        breaker = self.breakers.setdefault(replica.id, Breaker())
        breaker.failures += 1
        if breaker.failures >= settings.INFERIA_CIRCUIT_FAILURES:
            breaker.open_until = time.monotonic() + settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS
            breaker.opened_at_wall = time.time()

    def is_open(self, replica_id: int) -> bool:
        breaker = self.breakers.get(replica_id)
        return breaker is not None and breaker.open_until > time.monotonic()

    def _state(self, replica: ReplicaTarget) -> str:
        """Whether the replica's breaker is closed, open, or due for a probe (read only: `choose` acts on it)."""
        breaker = self.breakers.get(replica.id)
        if breaker is None or breaker.open_until == 0.0:
            return _CLOSED
        if replica.checked_at > breaker.opened_at_wall:
            del self.breakers[replica.id]  # a health check has passed since it opened
            return _CLOSED
        return _BROKEN if time.monotonic() < breaker.open_until else _PROBE
