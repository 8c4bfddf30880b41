"""The `inferia-sim` command: flags, `INFERIA_SIM_*` environment variables, signal handling."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from inferia_sim.config import DEFAULT_MODEL, FailureType, SimConfig
from inferia_sim.server import serve

ENV_PREFIX = "INFERIA_SIM_"


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def _failure_types(value: str) -> tuple[FailureType, ...]:
    try:
        return tuple(FailureType(item.strip()) for item in value.split(",") if item.strip())
    except ValueError:
        choices = ", ".join(kind.value for kind in FailureType)
        raise argparse.ArgumentTypeError(f"failure types are a comma list of: {choices}") from None


def build_parser() -> argparse.ArgumentParser:
    """Flags; each default comes from the matching `INFERIA_SIM_<FLAG>` variable when set."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="inferia-sim",
        description="Simulated vLLM-compatible inference engine (no model, no GPU) for running and testing Inferia.",
    )
    add = parser.add_argument
    add("--host", default=_env("HOST", defaults.host))
    add("--port", type=int, default=int(_env("PORT", str(defaults.port))))
    add(
        "--model",
        dest="models",
        action="append",
        help=f"served model name, repeatable (env: comma list; default {DEFAULT_MODEL})",
    )
    add("--ttft-ms", type=float, default=float(_env("TTFT_MS", str(defaults.ttft_ms))), help="time to first token")
    add("--itl-ms", type=float, default=float(_env("ITL_MS", str(defaults.itl_ms))), help="inter-token latency")
    add("--jitter", type=float, default=float(_env("JITTER", str(defaults.jitter))), help="delay randomisation, 0..1")
    add("--max-num-seqs", type=int, default=int(_env("MAX_NUM_SEQS", str(defaults.max_num_seqs))))
    add("--max-model-len", type=int, default=int(_env("MAX_MODEL_LEN", str(defaults.max_model_len))))
    add("--default-max-tokens", type=int, default=int(_env("DEFAULT_MAX_TOKENS", str(defaults.default_max_tokens))))
    add("--kv-cache-blocks", type=int, default=int(_env("KV_CACHE_BLOCKS", str(defaults.kv_cache_blocks))))
    add("--kv-block-size", type=int, default=int(_env("KV_BLOCK_SIZE", str(defaults.kv_block_size))))
    add(
        "--prefill-ms-per-token",
        type=float,
        default=float(_env("PREFILL_MS_PER_TOKEN", str(defaults.prefill_ms_per_token))),
        help="prefill time per prompt token not in the prefix cache, added to the time to first token",
    )
    add(
        "--prefix-cache-blocks",
        type=int,
        default=int(_env("PREFIX_CACHE_BLOCKS", str(defaults.prefix_cache_blocks))),
        help="prompt blocks (of --kv-block-size tokens) the automatic prefix cache keeps, LRU; 0 turns it off",
    )
    add("--failure-rate", type=float, default=float(_env("FAILURE_RATE", str(defaults.failure_rate))))
    add(
        "--failure-types",
        type=_failure_types,
        default=_failure_types(_env("FAILURE_TYPES", ",".join(kind.value for kind in FailureType))),
        help="comma list of: " + ", ".join(kind.value for kind in FailureType),
    )
    add("--startup-delay", type=float, default=float(_env("STARTUP_DELAY", str(defaults.startup_delay_s))))
    add(
        "--embedding-dimensions",
        type=int,
        default=int(_env("EMBEDDING_DIMENSIONS", str(defaults.embedding_dimensions))),
    )
    add("--seed", type=int, default=int(_env("SEED", str(defaults.seed))))
    add("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return parser


def config_from_args(argv: list[str] | None = None) -> tuple[SimConfig, str]:
    """The `SimConfig` and log level described by `argv` and the environment."""
    args = build_parser().parse_args(argv)
    models = args.models or [name.strip() for name in _env("MODEL", DEFAULT_MODEL).split(",") if name.strip()]
    config = SimConfig(
        host=args.host,
        port=args.port,
        models=tuple(dict.fromkeys(models)),
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        jitter=args.jitter,
        max_num_seqs=args.max_num_seqs,
        max_model_len=args.max_model_len,
        default_max_tokens=args.default_max_tokens,
        kv_cache_blocks=args.kv_cache_blocks,
        kv_block_size=args.kv_block_size,
        prefill_ms_per_token=args.prefill_ms_per_token,
        prefix_cache_blocks=args.prefix_cache_blocks,
        failure_rate=args.failure_rate,
        failure_types=args.failure_types,
        startup_delay_s=args.startup_delay,
        embedding_dimensions=args.embedding_dimensions,
        seed=args.seed,
    )
    return config, args.log_level


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed (it roughly halves the per-request CPU), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _serve_until_signalled(config: SimConfig) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = asyncio.create_task(serve(config))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for task in (server, stopper):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopper
    with contextlib.suppress(asyncio.CancelledError):
        await server


def main(argv: list[str] | None = None) -> None:
    """Entry point of `inferia-sim` and `python -m inferia_sim`; exits 0 on SIGTERM/SIGINT."""
    try:
        config, log_level = config_from_args(argv)
    except ValueError as exc:
        print(f"inferia-sim: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    _logging_setup(log_level)
    loop = new_event_loop()
    try:
        loop.run_until_complete(_serve_until_signalled(config))
    finally:
        loop.close()


def _logging_setup(level: str) -> None:
    """Text lines, or JSON ones with INFERIA_LOG_FORMAT=json as Inferia's own processes write them."""
    if os.environ.get("INFERIA_LOG_FORMAT", "text").lower() != "json":
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    from inferia_runtime.log_context import json_formatter

    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
