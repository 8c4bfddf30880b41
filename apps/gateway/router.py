"""Choosing a replica: the less loaded of two sampled at random (power of two choices), weighted by the engine's
reported load; the replica that most likely holds the prompt's prefix in its KV cache, or else the session's own,
while it is not much busier; and a circuit breaker per replica.

Sampling two replicas instead of scoring all of them keeps a request's routing cost flat in the number of replicas
(the choice Envoy's least-request balancer makes), and still avoids the herd that "always the least loaded" causes
when several web processes act on the same stale load figures. In-flight counts and breakers are this process's own
(several web processes may disagree; that is fine, the engines' load as scraped into Redis is what they share).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings

from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
from apps.gateway.prefix_index import PrefixIndex

# Weights that turn an engine's reported load into "outstanding requests": a waiting request is worse than one of
# ours in flight (it has not even started), and a full KV cache means new requests will queue.
WAITING_WEIGHT = 2.0
KV_CACHE_WEIGHT = 8.0
# Session affinity gives way when its replica has this many more outstanding requests than the sampled alternative.
AFFINITY_SLACK = 8.0
# A prompt goes to the replica holding its longest known prefix unless that one has this many more outstanding requests
# than the sampled alternative: a cached prefix saves a prefill, a queue costs every request in it.
PREFIX_SLACK = 4.0
# Random draws before giving up on sampling and scanning every replica: only when most replicas were tried or are
# circuit-broken does a draw keep missing, and then the scan is what guarantees each one gets its turn.
_SAMPLE_DRAWS = 8
# Breaker states as `Router.choose` sees a replica.
_CLOSED, _BROKEN, _PROBE = "closed", "broken", "probe"
# Jump consistent hash's multiplier (Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm").
_JUMP_MULTIPLIER = 2862933555777941757
_MASK64 = (1 << 64) - 1


@dataclass(slots=True)
class Breaker:
    """Consecutive failures of one replica; open (skipped) until `open_until`, then one probe is let through."""

    failures: int = 0
    open_until: float = 0.0  # monotonic; 0 when closed
    opened_at_wall: float = 0.0


def session_slot(session: str, count: int) -> int:
    """The replica index a session prefers among `count`: the same in every process, spread evenly, and when a
    replica is added at the end only about 1/count of the sessions move. O(log count)."""
    key = zlib.crc32(session.encode()) | (zlib.adler32(session.encode()) << 32)
    bucket, jump = -1, 0
    while jump < count:
        bucket = jump
        key = (key * _JUMP_MULTIPLIER + 1) & _MASK64
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket


class Router:
    """One process's routing state."""

    def __init__(self) -> None:
        self.inflight: dict[int, int] = {}
        self.breakers: dict[int, Breaker] = {}
        self.prefixes = PrefixIndex()
        self._random = random.Random()  # noqa: S311 (load balancing, not secrets)

    def choose(
        self,
        route: DeploymentRoute,
        *,
        tried: tuple[int, ...] = (),
        session: str | None = None,
        prefix: Sequence[int] = (),
    ) -> ReplicaTarget | None:
        """The replica for the next attempt, or None when every replica was tried or is circuit-broken.

        `prefix` is the prompt's chained prefix hashes (apps/gateway/prefix_index.py): a replica holding the longest
        known one is preferred (within PREFIX_SLACK when the prompt continues its own history, only when less loaded
        when it branches off a prefix others share), and the chosen replica is remembered as holding it from now on.
        Without a prefix, or a replica holding it, the session's replica or the two choices decide."""
        replicas = route.replicas
        count = len(replicas)
        if count == 0:
            return None
        if count == 1 and not tried and not self.breakers:
            return replicas[0]  # the common single-replica case, without the scoring
        if not prefix:
            return self._by_session(route, tried, session)
        match = self.prefixes.longest_match(prefix)
        chosen: ReplicaTarget | None = None
        holder = self._least_loaded_holder(route, match.holders, tried)
        if holder is not None:
            alternative = self._two_choices(replicas, tried)
            if alternative is None:
                chosen = holder
            elif match.shared:
                # A new conversation on instructions others share: worth a cold prefill once per replica, not a
                # queue, so the load decides (ties go to the alternative, which then holds the shared prefix too).
                chosen = holder if self.score(holder) < self.score(alternative) else alternative
            elif self.score(holder) <= self.score(alternative) + PREFIX_SLACK:
                chosen = holder  # its own conversation so far: the cached history is worth a short wait
            else:
                chosen = alternative  # too busy: the prefix moves, and is remembered where it went
        if chosen is None:
            chosen = self._by_session(route, tried, session)
        if chosen is not None:
            self.prefixes.record(prefix, chosen.id, matched=match.depth, known=match.depth if chosen is holder else 0)
        return chosen

    def _least_loaded_holder(
        self, route: DeploymentRoute, holder_ids: tuple[int, ...], tried: tuple[int, ...]
    ) -> ReplicaTarget | None:
        """Of the replicas that hold the prefix (a few at most), the least loaded one that may take the request."""
        best: ReplicaTarget | None = None
        best_score = 0.0
        for holder_id in holder_ids:
            holder = route.replicas_by_id.get(holder_id)
            if holder is None or holder_id in tried or self._state(holder) != _CLOSED:
                continue
            score = self.score(holder)
            if best is None or score < best_score:
                best, best_score = holder, score
        return best

    def _by_session(self, route: DeploymentRoute, tried: tuple[int, ...], session: str | None) -> ReplicaTarget | None:
        """The session's own replica while it is not much busier than two drawn at random, else the less loaded
        of those two."""
        replicas = route.replicas
        count = len(replicas)
        if session is not None:
            preferred = replicas[session_slot(session, count)]
            if preferred.id not in tried and self._state(preferred) == _CLOSED:
                alternative = self._two_choices(replicas, tried)
                if alternative is None or self.score(preferred) <= self.score(alternative) + AFFINITY_SLACK:
                    return preferred
                return alternative
        return self._two_choices(replicas, tried)

    def score(self, replica: ReplicaTarget) -> float:
        """Outstanding requests as this router counts them, plus the engine's reported load in the same unit."""
        return self.inflight.get(replica.id, 0) + WAITING_WEIGHT * replica.waiting + KV_CACHE_WEIGHT * replica.kv_cache

    def _two_choices(self, replicas: tuple[ReplicaTarget, ...], tried: tuple[int, ...]) -> ReplicaTarget | None:
        """The less loaded of two eligible replicas drawn at random (or the only one); a replica due for its
        half-open probe, when drawn, is taken at once."""
        count = len(replicas)
        draw = self._random.random
        first: ReplicaTarget | None = None
        # Two distinct indexes first, so that with two replicas both are always compared.
        start = int(draw() * count)
        step = 1 + int(draw() * (count - 1)) if count > 1 else 0
        for attempt in range(_SAMPLE_DRAWS):
            index = (start + attempt * step) % count if attempt < 2 else int(draw() * count)
            replica = replicas[index]
            if replica.id in tried or replica is first:
                continue
            state = self._state(replica)
            if state == _BROKEN:
                continue
            if state == _PROBE:
                return self._probe(replica)
            if first is None:
                first = replica
                continue
            return replica if self.score(replica) < self.score(first) else first
        return self._scan(replicas, tried, first)

    def _scan(
        self, replicas: tuple[ReplicaTarget, ...], tried: tuple[int, ...], first: ReplicaTarget | None
    ) -> ReplicaTarget | None:
        """Every replica in turn, from a random place: the draws kept missing, so most are tried or broken (or there
        is only one). Compares the first eligible found with the one already drawn."""
        count = len(replicas)
        start = int(self._random.random() * count)
        for offset in range(count):
            replica = replicas[(start + offset) % count]
            if replica.id in tried or replica is first:
                continue
            state = self._state(replica)
            if state == _BROKEN:
                continue
            if state == _PROBE:
                return self._probe(replica)
            if first is None:
                return replica
            return replica if self.score(replica) < self.score(first) else first
        return first

    def _probe(self, replica: ReplicaTarget) -> ReplicaTarget:
        # Half-open: this request probes it; the others keep away until it has answered.
        self.breakers[replica.id].open_until = time.monotonic() + settings.INFERIA_CIRCUIT_COOLDOWN_SECONDS
        return replica

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
