"""An engine's load as vLLM reports it on `/metrics`: read by the health checker (which polls) and by the node agent
(`inferia agent`, which pushes), so it imports nothing of Django.
"""

from __future__ import annotations

from dataclasses import dataclass

# vLLM's gauge names (older releases call KV-cache use gpu_cache_usage_perc).
RUNNING_METRIC = "vllm:num_requests_running"
WAITING_METRIC = "vllm:num_requests_waiting"
KV_CACHE_METRICS = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


@dataclass(frozen=True)
class EngineLoad:
    """A replica's load as the router weighs it: requests running, requests waiting, KV-cache use (0..1)."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache: float = 0.0

    def as_metrics(self, checked_at: float) -> dict[str, float]:
        """The shape of `Replica.last_metrics` (the gateway's catalog reads these keys)."""
        return {"running": self.running, "waiting": self.waiting, "kv_cache": self.kv_cache, "checked_at": checked_at}


_LOAD_METRICS = frozenset((RUNNING_METRIC, WAITING_METRIC, *KV_CACHE_METRICS))


def engine_load_parse(text: str) -> EngineLoad:
    """Read vLLM's Prometheus exposition: running and waiting summed over models, the highest KV-cache use.

    Only the samples of the three gauges are read, by a scan of the lines: a full exposition parser spends most of a
    1,000-replica check on the histograms around them. ValueError on a malformed value of those gauges."""
    running = waiting = 0.0
    kv_cache: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue  # comments, other engines' metrics
        brace, space = line.find("{"), line.find(" ")
        name_end = brace if 0 <= brace < space or space < 0 else space
        name = line[:name_end]
        if name not in _LOAD_METRICS:
            continue
        # The value follows the labels (whose quoted values may hold spaces) and may itself be followed by a timestamp.
        rest = line[line.rindex("}") + 1 :] if name_end == brace else line[name_end:]
        fields = rest.split()
        if not fields:
            raise ValueError(f"no value for {name}")
        value = float(fields[0])
        if name == RUNNING_METRIC:
            running += value
        elif name == WAITING_METRIC:
            waiting += value
        else:
            kv_cache[name] = max(kv_cache.get(name, 0.0), value)
    kv = next((kv_cache[name] for name in KV_CACHE_METRICS if name in kv_cache), 0.0)
    return EngineLoad(running=running, waiting=waiting, kv_cache=kv)
