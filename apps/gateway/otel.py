"""The OpenTelemetry SDK side of `tracing.py`, imported only when tracing is on: one tracer provider per process
with a batching OTLP/HTTP exporter (spans leave in a background thread, never on the request), and the span
wrapper for pipeline steps."""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from django.conf import settings
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from apps.gateway.catalog import ReplicaTarget
from apps.gateway.exchange import Exchange

Step = TypeVar("Step", bound=Callable[..., Awaitable[Any]])

REQUEST_ID = "inferia.request_id"
CLIENT_REQUEST_ID = "inferia.client_request_id"
REPLICA_ID = "inferia.replica_id"
TRACES_PATH = "/v1/traces"


def _traces_url(endpoint: str) -> str | None:
    """The OTLP/HTTP traces URL for INFERIA_OTEL_ENDPOINT (a collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
    is); None leaves the exporter to the standard environment variables."""
    if not endpoint:
        return None
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def _tracer() -> trace.Tracer:
    resource = Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or "inferia-gateway"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(settings.INFERIA_OTEL_ENDPOINT)))
    )
    trace.set_tracer_provider(provider)
    return provider.get_tracer("inferia.gateway")


TRACER = _tracer()
PROPAGATOR = TraceContextTextMapPropagator()
_CONTEXT_HEADERS = (b"traceparent", b"tracestate")


def _client_context(exchange: Exchange) -> Context | None:
    """The trace context the client sent (`traceparent`, `tracestate`), or None to start a new trace."""
    carrier = {name.decode(): value.decode("latin-1") for name, value in exchange.headers if name in _CONTEXT_HEADERS}
    return PROPAGATOR.extract(carrier) if carrier else None


def context_inject(headers: dict[str, str]) -> None:
    PROPAGATOR.inject(headers)


def span_wrapped(name: str, step: Step) -> Step:
    """`step` run inside a span named `name`, tagged with the request id (and the replica, for an upstream try);
    an exception leaving the step is recorded on the span and marks it as an error. The request's root span is a
    child of the client's trace when the request carries one."""
    root = name == "gateway.request"

    @functools.wraps(step)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        parent = _client_context(args[0]) if root and args and isinstance(args[0], Exchange) else None
        with TRACER.start_as_current_span(name, context=parent) as span:
            for arg in args:
                if isinstance(arg, Exchange):
                    span.set_attribute(REQUEST_ID, arg.request_id)
                    if arg.client_request_id:
                        span.set_attribute(CLIENT_REQUEST_ID, arg.client_request_id)
                elif isinstance(arg, ReplicaTarget):
                    span.set_attribute(REPLICA_ID, arg.id)
            return await step(*args, **kwargs)

    return cast(Step, wrapper)
