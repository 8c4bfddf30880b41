"""The gateway's in-process view of what can be served: deployments by served model name, and their READY replicas;
model routes (traffic splits with fallbacks) by name, over those deployments.

Loaded from PostgreSQL off the hot path, then kept in memory: reloaded when a deployment or replica changes (a
Redis message, see `catalog_changed`, sent by the subscribers in apps/gateway/signals.py), when a client asks for a
name it does not know (at most once a second), and after `INFERIA_GATEWAY_CATALOG_MAX_AGE` seconds. Replica load
(running/waiting requests, KV-cache use) comes from compute's health checker through Redis
(apps/compute/routing.py), refreshed about once a second by the runtime.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp
import redis
from channels.db import database_sync_to_async
from django.conf import settings

from apps.compute.routing import endpoint_base
from apps.gateway import metrics
from apps.gateway.selectors import DeploymentRow, ModelRouteRow, deployment_rows_list, model_route_rows_list
from apps.policies.costs import cost_micros_for
from inferia_runtime.redis_clients import sync_redis

logger = logging.getLogger(__name__)

CATALOG_CHANNEL = "inferia:gateway:catalog"
# An unknown model name reloads the catalog at most this often, so a flood of bad names cannot reach PostgreSQL.
MISS_RELOAD_INTERVAL_S = 1.0

# Headers of every upstream request; an external provider's API key is added per deployment.
UPSTREAM_HEADERS = {"Content-Type": "application/json"}

# Upstream paths by endpoint name (the same on vLLM and inferia-sim). `tokenize` counts a prompt's tokens.
UPSTREAM_PATHS = {
    "chat.completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
    "tokenize": "/tokenize",
}


@dataclass(slots=True)
class ReplicaTarget:
    """One READY engine: where to send each endpoint's requests, and its last reported load."""

    id: int
    deployment_id: int
    urls: dict[str, str]
    running: float = 0.0
    waiting: float = 0.0
    kv_cache: float = 0.0
    checked_at: float = 0.0  # when the health checker last saw it healthy (POSIX time), 0 if never


@dataclass(slots=True)
class DeploymentRoute:
    """A model name as the router sees it: a deployment's served name, or one of its LoRA adapters (same
    deployment, same replicas, `parent` set to the served name).

    `upstream_model` is the `model` the engine must receive when it differs from the name the client asked for (an
    external deployment serves its model_id); None on the common path, where the body goes upstream unchanged.
    `model_renames` then turns the engine's name back into the served name in answers, as bytes replacements.
    `tokenize` is True when its engine serves `/tokenize` (vLLM or inferia-sim, which Inferia runs), None when
    unknown (an external endpoint: asked once, see upstream_tokenize.py).
    """

    id: int
    organization_id: int | None
    served_model_name: str
    created: int
    price_input_per_mtok_micros: int
    price_output_per_mtok_micros: int
    timeout: aiohttp.ClientTimeout
    first_byte_timeout_s: float
    replicas: tuple[ReplicaTarget, ...]
    parent: str | None = None
    external: bool = False  # user-supplied endpoints: called through the SSRF-guarded session
    upstream_model: str | None = None
    model_renames: tuple[tuple[bytes, bytes], ...] = ()
    upstream_headers: dict[str, str] = field(default_factory=lambda: UPSTREAM_HEADERS, repr=False)
    tokenize: bool | None = True
    provider: str = ""  # the name of its deployment's provider (a metric label)
    # Its streams' coalescing (see event_relay.Coalescer): the longest a chunk waits, and the count that goes at once.
    stream_interval_s: float = 0.0
    stream_interval_chunks: int = 0
    # The replicas by id, for the router's lookups of a remembered replica (filled from `replicas`).
    replicas_by_id: dict[int, ReplicaTarget] = field(init=False, repr=False, compare=False)
    # What prompts' prefix hashes start from: an adapter's KV cache is its own, so it is keyed by the served name too.
    prefix_seed: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.replicas_by_id = {replica.id: replica for replica in self.replicas}
        self.prefix_seed = hash((self.id, self.served_model_name))

    def cost_micros(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Price of a request in micro-units, rounded as the budget counters round it (so reconciliation from
        usage records agrees with what was settled)."""
        return cost_micros_for(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            price_input_per_mtok_micros=self.price_input_per_mtok_micros,
            price_output_per_mtok_micros=self.price_output_per_mtok_micros,
        )


def _model_renames(upstream: str, served: str) -> tuple[tuple[bytes, bytes], ...]:
    """Replacements of `"model":"<upstream>"` by the served name, in the spellings engines write (compact, and
    Python's default separators). Inside a string value the quotes would be escaped, so content never matches."""
    old, new = json.dumps(upstream).encode(), json.dumps(served).encode()
    return tuple((b'"model"' + sep + old, b'"model"' + sep + new) for sep in (b":", b": "))


def _route_from_row(row: DeploymentRow) -> DeploymentRoute:
    connect = row.connect_timeout_s or settings.INFERIA_UPSTREAM_CONNECT_TIMEOUT
    idle = row.idle_timeout_s or settings.INFERIA_UPSTREAM_IDLE_TIMEOUT
    replicas = tuple(
        ReplicaTarget(
            id=replica_id,
            deployment_id=row.id,
            urls={name: endpoint_base(endpoint) + path for name, path in UPSTREAM_PATHS.items()},
            running=float(metrics.get("running", 0) or 0),  # type: ignore[arg-type]
            waiting=float(metrics.get("waiting", 0) or 0),  # type: ignore[arg-type]
            kv_cache=float(metrics.get("kv_cache", 0) or 0),  # type: ignore[arg-type]
        )
        for replica_id, endpoint, metrics in row.replicas
    )
    upstream_model = row.model_id if row.external and row.model_id and row.model_id != row.served_model_name else None
    return DeploymentRoute(
        id=row.id,
        organization_id=row.organization_id,
        served_model_name=row.served_model_name,
        created=row.created,
        price_input_per_mtok_micros=row.price_input_per_mtok_micros,
        price_output_per_mtok_micros=row.price_output_per_mtok_micros,
        # sock_read is the idle timeout between chunks; the first byte has its own deadline (see upstream.py).
        timeout=aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=idle),
        first_byte_timeout_s=row.first_byte_timeout_s or settings.INFERIA_UPSTREAM_FIRST_BYTE_TIMEOUT,
        replicas=replicas,
        external=row.external,
        upstream_model=upstream_model,
        model_renames=_model_renames(upstream_model, row.served_model_name) if upstream_model else (),
        upstream_headers={**UPSTREAM_HEADERS, **row.upstream_headers} if row.upstream_headers else UPSTREAM_HEADERS,
        tokenize=None if row.external else True,
        provider=row.provider,
        stream_interval_s=row.stream_interval_ms / 1000,
        stream_interval_chunks=row.stream_interval_chunks,
    )


def _adapter_route(route: DeploymentRoute, name: str) -> DeploymentRoute:
    """A LoRA adapter of `route`'s deployment: its own name, passed to the engine unchanged (vLLM selects the adapter
    by `model`), on the same replicas."""
    return dataclasses.replace(
        route, served_model_name=name, parent=route.served_model_name, upstream_model=None, model_renames=()
    )


def _route_target(route: DeploymentRoute, name: str) -> DeploymentRoute:
    """`route`'s deployment as a model route's target: the engine receives the model it serves, and answers name the
    route, the model the client asked for (the deployment that served is in the `x-inferia-deployment` header)."""
    upstream = route.upstream_model or route.served_model_name
    return dataclasses.replace(route, upstream_model=upstream, model_renames=_model_renames(upstream, name))


@dataclass(slots=True)
class SplitRoute:
    """A model route: its split targets with their cumulative weights (for one bisect per request), and its
    fallbacks in order. Targets whose deployment does not serve now (stopped, failed, deleted) are left out, so the
    split goes on over the others."""

    name: str
    organization_id: int
    created: int
    targets: tuple[DeploymentRoute, ...]
    cumulative: tuple[int, ...]
    weights: tuple[int, ...]
    fallbacks: tuple[DeploymentRoute, ...]

    def chain(self, draw: float, allowed: Callable[[str], bool]) -> tuple[DeploymentRoute, ...]:
        """The deployments to try for one request, in order: a split target drawn by weight (`draw` uniform in
        [0, 1)), then the fallbacks. Only deployments whose served name `allowed` admits take part: a key limited to
        some of a route's deployments is split over those alone. Empty when none may serve."""
        targets, cumulative = self.targets, self.cumulative
        if not all(allowed(target.served_model_name) for target in targets):
            kept = [(t, w) for t, w in zip(targets, self.weights, strict=True) if allowed(t.served_model_name)]
            targets = tuple(t for t, _ in kept)
            cumulative = tuple(_cumulative(w for _, w in kept))
        chosen: tuple[DeploymentRoute, ...] = ()
        if cumulative and cumulative[-1] > 0:
            chosen = (targets[bisect.bisect_right(cumulative, draw * cumulative[-1])],)
        chosen_ids = {route.id for route in chosen}
        return chosen + tuple(
            route for route in self.fallbacks if route.id not in chosen_ids and allowed(route.served_model_name)
        )


def _cumulative(weights: Iterable[int]) -> list[int]:
    return list(itertools.accumulate(weights))


def _split_from_row(
    row: ModelRouteRow, deployments: dict[int, DeploymentRoute], usable: dict[int, frozenset[int | None]]
) -> SplitRoute:
    """The route over the deployments its organisation may use now: a platform deployment no longer shared with it
    drops out here, whatever the route's rows still say."""
    deployments = {pk: route for pk, route in deployments.items() if row.organization_id in usable.get(pk, frozenset())}
    splits = [(deployments[d], w) for d, w in row.splits if d in deployments and w > 0]
    return SplitRoute(
        name=row.name,
        organization_id=row.organization_id,
        created=row.created,
        targets=tuple(_route_target(route, row.name) for route, _ in splits),
        cumulative=tuple(_cumulative(w for _, w in splits)),
        weights=tuple(w for _, w in splits),
        fallbacks=tuple(_route_target(deployments[d], row.name) for d in row.fallbacks if d in deployments),
    )


@dataclass(slots=True)
class Catalog:
    """Deployments indexed for the two questions the gateway asks: which deployment does this organisation mean
    by a model name (its own first, then platform ones shared with it), and what may it list."""

    own: dict[int | None, dict[str, DeploymentRoute]] = field(default_factory=dict)
    shared: dict[int, dict[str, DeploymentRoute]] = field(default_factory=dict)
    splits: dict[int, dict[str, SplitRoute]] = field(default_factory=dict)
    replicas: dict[int, ReplicaTarget] = field(default_factory=dict)
    loaded_at: float = 0.0

    @classmethod
    def from_rows(cls, rows: list[DeploymentRow], route_rows: list[ModelRouteRow] | None = None) -> Catalog:
        catalog = cls(loaded_at=time.monotonic())
        routes = [(row, _route_from_row(row)) for row in rows]
        for row, route in routes:
            catalog._add(row, route)
            for replica in route.replicas:
                catalog.replicas[replica.id] = replica
        # Adapters after every served name: a served name wins over an adapter of the same name (compute refuses
        # such a name, but an old row must not take another deployment's traffic).
        for row, route in routes:
            for name in row.lora_names:
                catalog._add(row, _adapter_route(route, name), keep_existing=True)
        by_id = {route.id: route for _, route in routes}
        # Which organisations may use each deployment: its owner, or for a platform one those it is shared with.
        usable: dict[int, frozenset[int | None]] = {
            row.id: frozenset((row.organization_id,) if row.organization_id is not None else row.shared_with)
            for row in rows
        }
        for route_row in route_rows or ():
            split = _split_from_row(route_row, by_id, usable)
            catalog.splits.setdefault(route_row.organization_id, {})[route_row.name] = split
        return catalog

    def _add(self, row: DeploymentRow, route: DeploymentRoute, *, keep_existing: bool = False) -> None:
        name = route.served_model_name
        indexes = [self.own.setdefault(row.organization_id, {})]
        if row.organization_id is None:
            indexes += [self.shared.setdefault(organization_id, {}) for organization_id in row.shared_with]
        for index in indexes:
            if not (keep_existing and name in index):
                index[name] = route

    def deployment_for(self, organization_id: int, model: str) -> DeploymentRoute | None:
        own = self.own.get(organization_id)
        if own is not None:
            route = own.get(model)
            if route is not None:
                return route
        shared = self.shared.get(organization_id)
        return shared.get(model) if shared is not None else None

    def served_for(self, organization_id: int, model: str) -> DeploymentRoute | SplitRoute | None:
        """What `model` means to an organisation: its own deployment, else its own model route, else a platform
        deployment shared with it (compute keeps an organisation's deployment and route names apart)."""
        own = self.own.get(organization_id)
        if own is not None:
            route = own.get(model)
            if route is not None:
                return route
        splits = self.splits.get(organization_id)
        if splits is not None:
            split = splits.get(model)
            if split is not None:
                return split
        shared = self.shared.get(organization_id)
        return shared.get(model) if shared is not None else None

    def splits_for(self, organization_id: int) -> list[SplitRoute]:
        """An organisation's model routes, by name."""
        splits = self.splits.get(organization_id, {})
        return [splits[name] for name in sorted(splits)]

    def deployments_for(self, organization_id: int) -> list[DeploymentRoute]:
        """What an organisation may use, by name; its own deployment wins over a shared one of the same name."""
        visible = dict(self.shared.get(organization_id, {}))
        visible.update(self.own.get(organization_id, {}))
        return [visible[name] for name in sorted(visible)]


class CatalogCache:
    """Holds the current catalog of one event loop and reloads it at most one load at a time."""

    def __init__(self) -> None:
        self.current: Catalog | None = None
        self.stale = True
        self._loading: asyncio.Task[Catalog] | None = None
        self._last_miss_reload = 0.0

    async def get(self) -> Catalog:
        """The catalog to route with now: loaded on first use and after an announced change; past its max age it is
        reloaded in the background while the current one keeps serving."""
        current = self.current
        if current is None or self.stale:
            # A change was announced: wait for it (changes are rare; routing to a removed replica is worse).
            return await self.reload()
        if time.monotonic() - current.loaded_at > settings.INFERIA_GATEWAY_CATALOG_MAX_AGE:
            self.reload_in_background()
        return current

    async def after_miss(self) -> Catalog | None:
        """A fresher catalog after an unknown model name, or None when nothing suggests the answer would change.

        Waits for a load already under way or due (a change was announced); otherwise reloads at most once a second.
        """
        if self._loading is not None or self.stale:
            return await self.reload()
        now = time.monotonic()
        if now - self._last_miss_reload < MISS_RELOAD_INTERVAL_S:
            return None
        self._last_miss_reload = now
        return await self.reload()

    def invalidate(self) -> None:
        self.stale = True

    async def reload(self) -> Catalog:
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        loading = self._loading
        try:
            return await asyncio.shield(loading)
        finally:
            if loading.done() and self._loading is loading:
                self._loading = None

    def reload_in_background(self) -> None:
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
            self._loading.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Catalog]) -> None:
        if self._loading is task:
            self._loading = None
        if not task.cancelled() and task.exception() is not None:
            logger.error("catalog reload failed", exc_info=task.exception())

    async def _load(self) -> Catalog:
        # Cleared before the read: a change committed while it runs marks the catalog stale again.
        self.stale = False
        try:
            rows, route_rows = await database_sync_to_async(_catalog_rows)()
        except Exception:
            self.stale = True
            raise
        catalog = Catalog.from_rows(rows, route_rows)
        previous = self.current
        if previous is not None:
            # Keep the last known load until the next refresh rather than resetting it to the database's copy.
            for replica_id, replica in catalog.replicas.items():
                old = previous.replicas.get(replica_id)
                if old is not None:
                    replica.running, replica.waiting = old.running, old.waiting
                    replica.kv_cache, replica.checked_at = old.kv_cache, old.checked_at
        self.current = catalog
        # Metrics label only the names served now, so a client's made-up names cannot add series.
        metrics.models_known_set(
            [
                *(name for index in catalog.own.values() for name in index),
                *(name for index in catalog.splits.values() for name in index),
            ]
        )
        return catalog


def _catalog_rows() -> tuple[list[DeploymentRow], list[ModelRouteRow]]:
    return deployment_rows_list(), model_route_rows_list()


def catalog_changed() -> None:
    """Tell every gateway process that deployments or replicas changed. Call after commit."""
    try:
        sync_redis().publish(CATALOG_CHANNEL, b"1")
    except redis.RedisError:
        logger.exception("could not announce a catalog change; gateways pick it up within their max age")
