"""OpenTelemetry tracing of the `/v1` request path: a span per step (request, auth, policy, limits, upstream attempt,
stream), each carrying the request id, exported over OTLP/HTTP when configured (`INFERIA_OTEL_ENDPOINT`, or the
standard `OTEL_EXPORTER_OTLP_ENDPOINT`).

The trace joins the client's (a W3C `traceparent` on the request makes the gateway's spans its children) and
continues to the engine (the upstream request carries the gateway's `traceparent`; vLLM started with
`--otlp-traces-endpoint` adds its own spans to the same trace).

Off by default, and free when off: `traced` then hands back the function itself, so the hot path has no wrapper and
no span object, the one per-attempt check is of a constant, and no opentelemetry module is imported (the SDK lives
in `otel.py`, imported only when tracing is on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from django.conf import settings

ENABLED: bool = settings.INFERIA_OTEL_ENABLED

Step = TypeVar("Step", bound=Callable[..., Awaitable[Any]])


def traced(name: str) -> Callable[[Step], Step]:
    """Decorate a pipeline step (an async function) to run inside a span called `name` when tracing is on."""

    def decorate(step: Step) -> Step:
        if not ENABLED:
            return step
        from apps.gateway.otel import span_wrapped

        return span_wrapped(name, step)

    return decorate


def trace_context_inject(headers: dict[str, str]) -> None:
    """Add the current span's W3C trace context to an upstream request's `headers` (call only when ENABLED)."""
    from apps.gateway.otel import context_inject

    context_inject(headers)
