"""`simulator`: replicas are `inferia-sim` processes on the worker host (what `make run` and the tests use)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from apps.compute.adapters.base import ProviderConfigError
from apps.compute.adapters.process import ProcessAdapter

if TYPE_CHECKING:
    from apps.compute.models import Replica

# Provider config `sim` -> inferia-sim flag, with the type each takes (latency, failure injection, ...).
SIM_OPTIONS: dict[str, tuple[str, type]] = {
    "ttft_ms": ("--ttft-ms", float),
    "itl_ms": ("--itl-ms", float),
    "jitter": ("--jitter", float),
    "max_num_seqs": ("--max-num-seqs", int),
    "kv_cache_blocks": ("--kv-cache-blocks", int),
    "failure_rate": ("--failure-rate", float),
    "startup_delay": ("--startup-delay", float),
    "seed": ("--seed", int),
}
# Engine arguments the simulator honours the way vLLM does.
ENGINE_TO_SIM = {"max_model_len": "--max-model-len", "max_num_seqs": "--max-num-seqs"}


def _sim_flags(options: Any) -> list[str]:
    if not isinstance(options, dict):
        raise ProviderConfigError("simulator config `sim` must be an object")
    flags: list[str] = []
    for key, value in options.items():
        if key not in SIM_OPTIONS:
            raise ProviderConfigError(f"unknown simulator option {key!r}; known: {', '.join(sorted(SIM_OPTIONS))}")
        flag, kind = SIM_OPTIONS[key]
        wrong_type = kind is int and not isinstance(value, int)
        if isinstance(value, bool) or not isinstance(value, int | float) or wrong_type:
            raise ProviderConfigError(f"simulator option {key} must be a {kind.__name__}")
        flags += [flag, str(value)]
    return flags


class SimulatorAdapter(ProcessAdapter):
    """Starts `python -m inferia_sim` serving the deployment's name (and each LoRA adapter's, so they route).

    Provider config: `sim` (an object of SIM_OPTIONS, e.g. {"ttft_ms": 50}), `bind_host`, `advertise_host`."""

    kind = "simulator"

    def command(self, replica: Replica, *, host: str, port: int) -> list[str]:
        spec = self.engine_spec(replica.deployment)
        argv = [sys.executable, "-m", "inferia_sim", "--host", host, "--port", str(port)]
        for name in spec.served_names:
            argv += ["--model", name]
        for key, flag in ENGINE_TO_SIM.items():
            if key in spec.args:
                argv += [flag, str(spec.args[key])]
        return argv + _sim_flags(self.config.get("sim", {}))
