"""Prometheus metrics of the data plane, exported by `/metrics` (see metrics_export.py).

Every label value is one Inferia knows, so the number of series is bounded by configured objects, never by what
clients send:
- `model`: a name the gateway's catalog serves (a deployment's served name or one of its LoRA adapters); any other
  name a client asks for is counted as `UNKNOWN_MODEL`, and an unauthenticated request as "".
- `organization`: the authenticated key's organisation slug ("" before authentication).
- `status`: the HTTP statuses the gateway answers with; any other upstream status as its class ("4xx", "5xx").
- `provider`: the name of a configured provider (of the deployment that answered).
- `replica`: a replica id from the catalog; `kind`: an exception class name, "timeout" or a 5xx status.
- `limit`: the error code of a rate limit, quota or budget refusal; `direction`: "in" or "out".
- `relay`: "fast" or "general".
- `route`: which `/v1` or `/ollama` consumer answered (chat.completions, completions, embeddings, messages,
  messages.count_tokens, models, vector_stores.search, ollama, ollama.chat, ollama.generate, ollama.embed,
  ollama.tags, ollama.show, ollama.version, other); `status_class`: "2xx", "4xx" or "5xx".
Series of deleted deployments, replicas and organisations are dropped at each scrape (`series_prune`).

Multi-process safe: with `PROMETHEUS_MULTIPROC_DIR` set (several web processes), prometheus_client keeps the values
in per-process files that the `/metrics` view of any process aggregates.
Label children are looked up once and kept, because `.labels()` is comparatively slow on the hot path.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# A model name no deployment serves: typos, probes and random names all share this one series.
UNKNOWN_MODEL = "__unknown__"
# What the gateway itself answers with; an engine's other statuses are counted by class.
_STATUSES = frozenset({200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 499, 500, 502, 503, 504})
_UPSTREAM_HTTP_KINDS = frozenset({"http_500", "http_502", "http_503", "http_504"})

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
COST = Counter(
    "inferia_gateway_cost",
    "What requests cost, in the configured currency (INFERIA_CURRENCY), by model and organisation.",
    ["model", "organization"],
)
TOKENS = Counter("inferia_gateway_tokens", "Tokens in (prompt) and out (completion).", ["model", "direction"])
UPSTREAM_ERRORS = Counter(
    "inferia_gateway_upstream_errors", "Failed upstream attempts by replica and kind.", ["replica", "kind"]
)
FALLBACKS = Counter(
    "inferia_gateway_fallbacks",
    "Requests of a model route passed on to its next deployment before the first byte.",
    ["model"],
)
RELAYED_STREAMS = Counter(
    "inferia_gateway_relayed_streams",
    "Streamed answers by the relay that forwarded them: fast (from the engine socket's callback) or general (per-event "
    "work: output guardrails, model renames, answer capture; or a server without the body writer).",
    ["relay"],
)
_relayed = {relay: RELAYED_STREAMS.labels(relay) for relay in ("fast", "general")}
SERVED_BY = Counter(
    "inferia_gateway_deployment_requests",
    "Requests through /v1 by the model asked for, the deployment (served name) that answered, its provider, and "
    "status.",
    ["model", "deployment", "provider", "status"],
)
REQUEST_DURATION = Histogram(
    "inferia_gateway_request_duration_seconds",
    "Every /v1 request from its arrival to its last byte, by model, route and status class.",
    ["model", "route", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
USAGE_EVENTS_LOST = Counter(
    "inferia_gateway_usage_events_lost",
    "Usage events Redis did not take (each logged with its request id): requests that are neither billed nor counted.",
)
IN_FLIGHT = Gauge("inferia_gateway_requests_in_flight", "Requests being served right now.", multiprocess_mode="livesum")
RATE_LIMITED = Counter(
    "inferia_gateway_rate_limited", "Requests refused by a rate limit or quota.", ["organization", "limit"]
)

# The labels that name configured objects, by metric: what `series_prune` and the scrape filter check.
_OBJECT_LABELS: dict[MetricWrapperBase, tuple[str, ...]] = {
    REQUESTS: ("model", "organization", "status"),
    TIME_TO_FIRST_TOKEN: ("model",),
    INTER_TOKEN_LATENCY: ("model",),
    TOKENS: ("model", "direction"),
    COST: ("model", "organization"),
    UPSTREAM_ERRORS: ("replica", "kind"),
    RATE_LIMITED: ("organization", "limit"),
    FALLBACKS: ("model",),
    SERVED_BY: ("model", "deployment", "provider", "status"),
    REQUEST_DURATION: ("model", "route", "status_class"),
}
# prometheus_client cannot delete from its multi-process files and warns on each removal: there the scrape filter
# (`LiveLabels.sample_alive`) hides the dead series, and removing the child still frees this process's memory.
warnings.filterwarnings(
    "ignore", message=r"(Removal|Clearing) of labels has not been implemented", category=UserWarning
)

_known_models: frozenset[str] = frozenset()
_request_children: dict[tuple[str, str, int], Counter] = {}
_model_children: dict[str, tuple[Histogram, Histogram, Counter, Counter]] = {}
_served_children: dict[tuple[str, str, str, int], Counter] = {}
_duration_children: dict[tuple[str, str, int], Histogram] = {}
_cost_children: dict[tuple[str, str], Counter] = {}


def models_known_set(names: Iterable[str]) -> None:
    """The model names the catalog serves now (called on each catalog load): only these become label values."""
    global _known_models
    known = frozenset(names)
    if known != _known_models:
        _known_models = known
        # A name that stopped being served must not keep counting under its own label through a cached child.
        _request_children.clear()
        _model_children.clear()
        _served_children.clear()
        _duration_children.clear()
        _cost_children.clear()


def model_label(model: str) -> str:
    """`model` itself when the catalog serves it, else `UNKNOWN_MODEL` ("" stays "": not authenticated)."""
    return model if model in _known_models or not model else UNKNOWN_MODEL


def status_label(status: int) -> str:
    return str(status) if status in _STATUSES else f"{status // 100}xx"


def request_counted(*, model: str, organization: str, status: int) -> None:
    key = (model_label(model), organization, status)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = REQUESTS.labels(key[0], organization, status_label(status))
    child.inc()


def request_timed(
    *, model: str, ttft_s: float | None, inter_token_s: float | None, prompt_tokens: int, completion_tokens: int
) -> None:
    if model not in _known_models:
        model = UNKNOWN_MODEL
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


def request_finished(*, route: str, model: str, status: int, seconds: float) -> None:
    """A `/v1` request's end-to-end time (`route` is the consumer's own name, never a client's path)."""
    key = (model_label(model), route, status // 100)
    child = _duration_children.get(key)
    if child is None:
        child = _duration_children[key] = REQUEST_DURATION.labels(key[0], route, f"{key[2]}xx")
    child.observe(seconds)


def cost_counted(*, model: str, organization: str, cost_micros: int) -> None:
    """A request's cost (micro-units) in the currency's units: dashboards add it up by organisation and model."""
    if cost_micros <= 0:
        return
    key = (model_label(model), organization)
    child = _cost_children.get(key)
    if child is None:
        child = _cost_children[key] = COST.labels(*key)
    child.inc(cost_micros / 1_000_000)


def fallback_counted(*, model: str) -> None:
    FALLBACKS.labels(model_label(model)).inc()


def served_by_counted(*, model: str, deployment: str, provider: str, status: int) -> None:
    """A request's answer by the deployment that gave it (and its provider): a model route's split, measured per
    deployment."""
    key = (model_label(model), model_label(deployment), provider, status)
    child = _served_children.get(key)
    if child is None:
        child = _served_children[key] = SERVED_BY.labels(key[0], key[1], provider, status_label(status))
    child.inc()


def stream_relayed(relay: str) -> None:
    _relayed[relay].inc()


def upstream_error_counted(*, replica_id: int, kind: str) -> None:
    if kind.startswith("http_") and kind not in _UPSTREAM_HTTP_KINDS:
        kind = "http_5xx"
    UPSTREAM_ERRORS.labels(str(replica_id), kind).inc()


def rate_limited_counted(*, organization: str, code: str) -> None:
    """A request refused by a rate limit, quota or budget (`code`: rate_limit_exceeded, quota_exceeded, ...)."""
    RATE_LIMITED.labels(organization, code).inc()


@dataclass(frozen=True, slots=True)
class LiveLabels:
    """The label values of objects that exist now: model names of existing deployments (and their adapters),
    replica ids, organisation slugs and provider names. Series naming anything else belong to deleted objects."""

    models: frozenset[str]
    replicas: frozenset[str]
    organizations: frozenset[str]
    providers: frozenset[str] = frozenset()

    def alive(self, labels: dict[str, str]) -> bool:
        for label in ("model", "deployment"):
            model = labels.get(label)
            if model is not None and model not in self.models and model not in ("", UNKNOWN_MODEL):
                return False
        organization = labels.get("organization")
        if organization is not None and organization and organization not in self.organizations:
            return False
        provider = labels.get("provider")
        if provider is not None and provider and provider not in self.providers:
            return False
        replica = labels.get("replica")
        return replica is None or replica in self.replicas

    def sample_alive(self, name: str, labels: dict[str, str]) -> bool:
        """Whether a scraped sample may be shown: the gateway's own series only while their objects exist."""
        return not name.startswith("inferia_gateway_") or self.alive(labels)


def series_prune(live: LiveLabels) -> int:
    """Remove this process's series of deleted deployments, replicas and organisations; how many were removed."""
    removed = 0
    for metric, names in _OBJECT_LABELS.items():
        held = {
            tuple(sample.labels[name] for name in names)
            for family in metric.collect()
            for sample in family.samples
            if all(name in sample.labels for name in names)
        }
        for values in held:
            if not live.alive(dict(zip(names, values, strict=True))):
                metric.remove(*values)
                removed += 1
    if removed:
        _request_children.clear()  # cached children of removed series would count into the void
        _model_children.clear()
        _served_children.clear()
        _duration_children.clear()
        _cost_children.clear()
    return removed
