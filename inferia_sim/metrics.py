"""Counters the simulated engine keeps and their rendering as Prometheus text under vLLM's metric names."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from inferia_sim.prefix_cache import PrefixCache
from inferia_sim.scheduler import SequenceScheduler

# vLLM's bucket boundaries, so dashboards built for vLLM read the simulator the same way.
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0)
FINISHED_REASONS = ("stop", "length", "abort")

PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Histogram:
    """A Prometheus histogram with fixed buckets; `observe` is a bisect and two additions."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            cumulative += count
            lines.append(f'{name}_bucket{{le="{bound}",{labels}}} {cumulative}')
        lines.append(f'{name}_bucket{{le="+Inf",{labels}}} {self.count}')
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        lines.append(f"{name}_sum{{{labels}}} {self.total}")
        return lines


@dataclass
class EngineStats:
    """Cumulative request and token counts since start-up."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    tokenize_requests: int = 0
    finished: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FINISHED_REASONS, 0))
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e_latency: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))


def metrics_render(
    *, model_name: str, stats: EngineStats, scheduler: SequenceScheduler, prefix_cache: PrefixCache | None = None
) -> bytes:
    """The `/metrics` body, labelled with `model_name` as vLLM labels its metrics with the first served name."""
    labels = f'model_name="{model_name}"'
    kv_usage = scheduler.kv_cache_usage
    lines: list[str] = []

    def sample(name: str, kind: str, help_text: str, value: float) -> None:
        lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"))

    sample("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", scheduler.running)
    sample("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", scheduler.waiting)
    sample("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", kv_usage)
    sample("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage.", kv_usage)
    sample("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", stats.prompt_tokens)
    sample("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.", stats.generation_tokens)
    if prefix_cache is not None:
        queried, hit = prefix_cache.queried_tokens, prefix_cache.hit_tokens
        sample("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in queried tokens.", queried)
        sample("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in cached tokens.", hit)
        sample(
            "vllm:gpu_prefix_cache_hit_rate",
            "gauge",
            "GPU prefix cache block hit rate.",
            hit / queried if queried else 0,
        )
    # Not a vLLM metric: how often gateways asked this engine to count a prompt.
    sample("inferia_sim:tokenize_requests_total", "counter", "Number of /tokenize requests.", stats.tokenize_requests)
    lines.append("# HELP vllm:request_success_total Count of successfully processed requests.")
    lines.append("# TYPE vllm:request_success_total counter")
    for reason, count in stats.finished.items():
        lines.append(f'vllm:request_success_total{{finished_reason="{reason}",{labels}}} {count}')
    lines += stats.ttft.render(
        "vllm:time_to_first_token_seconds", labels, "Histogram of time to first token in seconds."
    )
    lines += stats.e2e_latency.render(
        "vllm:e2e_request_latency_seconds", labels, "Histogram of end to end request latency in seconds."
    )
    return ("\n".join(lines) + "\n").encode()
