"""`/metrics`: the Prometheus scrape, protected, and limited to series of objects that exist.

Who may scrape: with `INFERIA_METRICS_TOKEN` set, only a request with `Authorization: Bearer <token>` (compared in
constant time; 401 otherwise). Without a token, the page lists every organisation's slugs and traffic, so it is open
only on a developer's setup (INFERIA_DEBUG, or the embedded default); in production it answers 404 until a token is
configured. Loopback-only would not do: behind a reverse proxy on the same host every client comes from loopback.

Besides the gateway's own series (apps/gateway/metrics.py, aggregated over processes by prometheus_client's
multi-process files), the scrape reads the platform's state where it lives, so that every web process reports the
same values (aggregate them with `max`, not `sum`, across targets): the fleet (apps/compute/metrics.py), budgets
(apps/policies/metrics.py), the usage flush's backlog, the Celery queues' lengths, and whether PostgreSQL and Redis
answer. A scrape still answers while PostgreSQL or Redis is down, with `inferia_dependency_up` saying which.

Also here: django-prometheus's after-middleware with the HTTP method label bounded (it labels one latency histogram
with the raw method, so any made-up method became a new series).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import prometheus_client
import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from django_prometheus.middleware import PrometheusAfterMiddleware as _PrometheusAfterMiddleware
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from apps.compute.metrics import FleetCollector
from apps.gateway.metrics import LiveLabels, series_prune
from apps.gateway.selectors import metric_labels_live
from apps.policies.metrics import BudgetCollector
from apps.usage.backlog import usage_backlog
from celery_app.queue_depth import queue_depths
from inferia_runtime.redis_clients import redis_ping, sync_redis


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _LiveOnly:
    """A collector showing what `source` collects, less the gateway's series of deleted objects. Needed in
    multi-process mode, where prometheus_client cannot remove a series from the files of other processes."""

    def __init__(self, source: _Collector, live: LiveLabels) -> None:
        self.source, self.live = source, live

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if family.name.startswith("inferia_gateway_"):
                family.samples = [s for s in family.samples if self.live.sample_alive(s.name, s.labels)]
            yield family


class _UsageBacklog:
    """The usage flush as the platform sees it: events waiting in the stream, the age of the oldest (the flush's
    lag) and dead letters (events the worker could not store; `inferia usage dead-letters` shows them). Read from
    Redis at scrape time, so every web process reports the same values (alert on max, not sum)."""

    def collect(self) -> Iterator[Metric]:
        try:
            backlog = usage_backlog(sync_redis())
        except redis.RedisError:
            return  # nothing to report; the gateway's own 503s and Redis's exporter say why
        yield GaugeMetricFamily(
            "inferia_usage_events_waiting", "Usage events in the stream not stored yet.", value=backlog.waiting
        )
        yield GaugeMetricFamily(
            "inferia_usage_flush_lag_seconds",
            "Age of the oldest usage event not stored yet (0 when the stream is empty).",
            value=backlog.lag_seconds,
        )
        yield GaugeMetricFamily(
            "inferia_usage_dead_letters",
            "Usage events the worker could not store, kept until replayed (`inferia usage dead-letters`).",
            value=backlog.dead_letters,
        )


class _QueueDepth:
    """Tasks waiting in each Celery queue, read from the broker at scrape time (none when it cannot be reached)."""

    def collect(self) -> Iterator[Metric]:
        depths = queue_depths()
        if depths is None:
            return
        family = GaugeMetricFamily(
            "inferia_celery_queue_length", "Tasks waiting in a Celery queue for a worker.", labels=["queue"]
        )
        for name, depth in depths.items():
            family.add_metric([name], depth)
        yield family


def _postgresql_up() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        connection.close()  # the next scrape reconnects rather than reusing a broken connection
        return False
    return True


class _Dependencies:
    """Whether this web process reaches PostgreSQL and Redis (the cache and counters' database), checked per scrape."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "inferia_dependency_up", "1 when the web process reaches the service, else 0.", labels=["dependency"]
        )
        family.add_metric(["postgresql"], float(_postgresql_up()))
        family.add_metric(["redis"], float(redis_ping()))
        yield family


class _Together:
    def __init__(self, *collectors: _Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def scrape_allowed(request: HttpRequest) -> bool:
    """True for the configured bearer token; False for a missing or wrong one; Http404 when no token is configured
    outside a developer's setup (the page is not public by default)."""
    token: str = settings.INFERIA_METRICS_TOKEN
    if not token:
        if settings.DEBUG or settings.EMBEDDED:
            return True
        raise Http404("not found")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes: constant time whatever the characters, and no TypeError on non-ASCII input.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _labels_live() -> LiveLabels | None:
    """None while PostgreSQL is down: the scrape then shows every series rather than failing (and with it the
    alerts that say PostgreSQL is down); the filter resumes when it is back."""
    try:
        return metric_labels_live()
    except DatabaseError:
        return None


@require_safe
def metrics_scrape(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition of this process (or, with PROMETHEUS_MULTIPROC_DIR, of all web processes)."""
    if not scrape_allowed(request):
        response = HttpResponse("a valid scrape token is required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    source: _Collector = prometheus_client.REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ or "prometheus_multiproc_dir" in os.environ:
        source = MultiProcessCollector(None)  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
    live = _labels_live()
    if live is not None:
        series_prune(live)
        source = _LiveOnly(source, live)
    scrape = _Together(source, _UsageBacklog(), FleetCollector(), BudgetCollector(), _QueueDepth(), _Dependencies())
    body = prometheus_client.generate_latest(scrape)
    return HttpResponse(body, content_type=prometheus_client.CONTENT_TYPE_LATEST)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"})


class PrometheusAfterMiddleware(_PrometheusAfterMiddleware):  # type: ignore[misc]  # django-prometheus is untyped
    """django-prometheus's, with every `method` label one of the standard methods (else "<invalid method>")."""

    def label_metric(self, metric: Any, request: HttpRequest, response: Any = None, **labels: str) -> Any:
        method = labels.get("method")
        if method is not None and method not in _METHODS:
            labels["method"] = "<invalid method>"
        return super().label_metric(metric, request, response, **labels)
