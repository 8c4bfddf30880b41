"""Settings of one simulated engine: what it serves, how fast it is and how it misbehaves."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

DEFAULT_MODEL = "inferia/sim-model"


class FailureType(StrEnum):
    """Ways an injected failure shows up to the client, modelled on what real engines do under stress."""

    HTTP_500 = "http_500"  # engine error: 500 with an OpenAI-shaped error body
    HTTP_503 = "http_503"  # overloaded/unavailable: 503 with an OpenAI-shaped error body
    TIMEOUT = "timeout"  # the engine hangs: no response until the client gives up
    DISCONNECT = "disconnect"  # the connection is closed before any response byte
    MIDSTREAM = "midstream"  # the response starts, then the connection drops after some tokens


@dataclass(frozen=True)
class SimConfig:
    """Everything `inferia-sim` can be told at start-up (CLI flags and `INFERIA_SIM_*` env vars map onto it)."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port; `SimServer.port` then tells which
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    jitter: float = 0.0  # each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter]
    max_num_seqs: int = 256
    max_model_len: int = 4096
    default_max_tokens: int = 64  # output length when the request names no max_tokens (finish_reason "stop")
    kv_cache_blocks: int = 16384
    kv_block_size: int = 16  # tokens per KV block, as vLLM's default
    # Prefill time per prompt token not found in the prefix cache, added to ttft_ms; 0 makes prompt length free.
    prefill_ms_per_token: float = 0.0
    # Prompt blocks (of kv_block_size tokens) the automatic prefix cache keeps; 0 turns prefix caching off.
    prefix_cache_blocks: int = 0
    failure_rate: float = 0.0
    failure_types: tuple[FailureType, ...] = field(default=tuple(FailureType))
    startup_delay_s: float = 0.0
    embedding_dimensions: int = 384
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("at least one served model name is required")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError("failure_rate must be between 0 and 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")
        if self.failure_rate > 0 and not self.failure_types:
            raise ValueError("failure_rate > 0 needs at least one failure type")
        for name, value in (("max_num_seqs", self.max_num_seqs), ("max_model_len", self.max_model_len)):
            if value < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.kv_cache_blocks < 1 or self.kv_block_size < 1:
            raise ValueError("kv_cache_blocks and kv_block_size must be at least 1")
        if self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        if self.prefix_cache_blocks < 0:
            raise ValueError("prefix_cache_blocks cannot be negative")
        if min(self.ttft_ms, self.itl_ms, self.startup_delay_s, self.prefill_ms_per_token) < 0:
            raise ValueError("delays cannot be negative")

    @property
    def base_model(self) -> str:
        """The name vLLM reports for the base model: the first served name (used in metrics and responses)."""
        return self.models[0]
