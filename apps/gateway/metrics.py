"""Prometheus metrics of the data plane, exported by django-prometheus's `/metrics` view.

Multi-process safe: with `PROMETHEUS_MULTIPROC_DIR` set (as the launcher does for several web processes),
prometheus_client keeps the values in per-process files that the `/metrics` view of any process aggregates.
Label children are looked up once and kept, because `.labels()` is comparatively slow on the hot path.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "inferia_gateway_requests",
    "Requests through /v1 by model, organisation and status.",
    ["model", "organization", "status"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "inferia_gateway_time_to_first_token_seconds",
    "From receiving the request to sending the first byte of the answer.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "inferia_gateway_inter_token_latency_seconds",
    "Mean time between streamed events of a request.",
    ["model"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
TOKENS = Counter("inferia_gateway_tokens", "Tokens in (prompt) and out (completion).", ["model", "direction"])
UPSTREAM_ERRORS = Counter(
    "inferia_gateway_upstream_errors", "Failed upstream attempts by replica and kind.", ["replica", "kind"]
)
IN_FLIGHT = Gauge("inferia_gateway_requests_in_flight", "Requests being served right now.", multiprocess_mode="livesum")
RATE_LIMITED = Counter(
    "inferia_gateway_rate_limited", "Requests refused by a rate limit or quota.", ["organization", "limit"]
)

_request_children: dict[tuple[str, str, int], Counter] = {}
_model_children: dict[str, tuple[Histogram, Histogram, Counter, Counter]] = {}


def request_counted(*, model: str, organization: str, status: int) -> None:
    key = (model, organization, status)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(model, organization, str(status))
    child.inc()


def request_timed(
    *, model: str, ttft_s: float | None, inter_token_s: float | None, prompt_tokens: int, completion_tokens: int
) -> None:
    children = _model_children.get(model)
    if children is None:
        children = _model_children[model] = (
            TIME_TO_FIRST_TOKEN.labels(model),
            INTER_TOKEN_LATENCY.labels(model),
            TOKENS.labels(model, "in"),
            TOKENS.labels(model, "out"),
        )
    ttft, itl, tokens_in, tokens_out = children
    if ttft_s is not None:
        ttft.observe(ttft_s)
    if inter_token_s is not None:
        itl.observe(inter_token_s)
    if prompt_tokens:
        tokens_in.inc(prompt_tokens)
    if completion_tokens:
        tokens_out.inc(completion_tokens)


def upstream_error_counted(*, replica_id: int, kind: str) -> None:
    UPSTREAM_ERRORS.labels(str(replica_id), kind).inc()


def rate_limited_counted(*, organization: str, code: str) -> None:
    """A request refused by a rate limit, quota or budget (`code`: rate_limit_exceeded, quota_exceeded, ...)."""
    RATE_LIMITED.labels(organization, code).inc()
