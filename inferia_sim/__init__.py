"""inferia-sim: a simulated vLLM-compatible engine that ships with Inferia.

It serves the OpenAI-compatible API vLLM serves (chat, completions, embeddings, models, tokenize, runtime LoRA),
vLLM's `/health` and `/metrics`, with configurable latency, concurrency limits and failure injection, and no model
behind it. It makes the platform runnable and testable without a GPU and drives the benchmarks.
"""

from __future__ import annotations

from inferia_sim.config import FailureType, SimConfig
from inferia_sim.server import SimServer, serve

__all__ = ["FailureType", "SimConfig", "SimServer", "serve"]
