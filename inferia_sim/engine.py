"""The simulated engine's state: served models and LoRA adapters, admission, counters, randomness, readiness."""

from __future__ import annotations

import json
import random
import time
from http import HTTPStatus

from inferia_sim.config import FailureType, SimConfig
from inferia_sim.errors import ApiError
from inferia_sim.metrics import EngineStats
from inferia_sim.prefix_cache import PrefixCache
from inferia_sim.scheduler import SequenceScheduler
from inferia_sim.tokens import OutputText, output_sequence


class SimEngine:
    """One simulated vLLM engine; all request handlers share it (single event loop, so no locking)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.scheduler = SequenceScheduler(
            max_num_seqs=config.max_num_seqs,
            kv_cache_blocks=config.kv_cache_blocks,
            kv_block_size=config.kv_block_size,
        )
        self.stats = EngineStats()
        self.prefix_cache = (
            PrefixCache(capacity_blocks=config.prefix_cache_blocks, block_size=config.kv_block_size)
            if config.prefix_cache_blocks
            else None
        )
        self.output = OutputText(output_sequence(config.seed))
        self.rng = random.Random(config.seed)  # noqa: S311 - simulated randomness, reproducible by seed
        self.created = int(time.time())
        self.lora_adapters: dict[str, str] = {}  # lora_name -> lora_path, in load order
        self._ready_at = time.monotonic() + config.startup_delay_s
        self._ready = config.startup_delay_s <= 0
        self._model_json: dict[str, bytes] = {}

    @property
    def ready(self) -> bool:
        """False while the simulated model is still "loading" (the configured start-up delay)."""
        if not self._ready and time.monotonic() >= self._ready_at:
            self._ready = True
        return self._ready

    def require_ready(self) -> None:
        if not self.ready:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "The model is still loading, try again later.")

    def resolve_model(self, requested: object) -> str:
        """The model name a response reports for `requested`, as vLLM does: a LoRA's own name, else the base name.

        A missing model means the base model (vLLM allows omitting it); an unknown one is a 404.
        """
        if requested is None:
            return self.config.base_model
        if requested in self.lora_adapters:
            return str(requested)
        if requested in self.config.models:
            return self.config.base_model
        raise ApiError(HTTPStatus.NOT_FOUND, f"The model `{requested}` does not exist.", param="model")

    def model_json(self, name: str) -> bytes:
        """`name` as a JSON string, cached because it is spliced into every streamed chunk."""
        encoded = self._model_json.get(name)
        if encoded is None:
            encoded = self._model_json[name] = json.dumps(name).encode()
        return encoded

    def delay_s(self, ms: float) -> float:
        """A configured delay in seconds with jitter applied."""
        if ms <= 0:
            return 0.0
        jitter = self.config.jitter
        factor = 1.0 + self.rng.uniform(-jitter, jitter) if jitter else 1.0
        return ms * factor / 1000.0

    def pick_failure(self) -> FailureType | None:
        """Whether this request fails, and how, according to the configured failure rate and types."""
        rate = self.config.failure_rate
        if rate <= 0 or self.rng.random() >= rate:
            return None
        return self.rng.choice(self.config.failure_types)
