"""`inferia agent`: the small process on a GPU node, next to vLLM, that pushes the node's heartbeat to Inferia.

Every --interval seconds it asks the local engine for `/health` (ready, or still starting) and, when ready, its
`/metrics` (vLLM's num_requests_running, num_requests_waiting and kv_cache_usage_perc), and posts them to
`POST /api/nodes/heartbeat` with the replica's node token. For a node the control plane cannot poll (behind NAT, a
firewall that only publishes the inference port), these pushes are what keeps the replica READY: the health checker
counts a fresh push as healthy whatever its own poll says.

The token comes from the environment (INFERIA_NODE_TOKEN), never the command line, where `ps` would show it.
Every request has a timeout; after a failure the next try waits twice as long, up to --max-backoff, with jitter so
that a fleet coming back does not knock in step; a refused token (the replica was retired) ends the agent with
status 2. Imports no Django: it runs where only the engine and this package are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from inferia_runtime.engine_load import engine_load_parse
from inferia_runtime.node_agent import ENGINE_ENV, INTERVAL_ENV, SERVER_ENV, TOKEN_ENV

TOKEN_PREFIX = "inf-node-"  # noqa: S105 - a prefix, not a secret
HEARTBEAT_PATH = "/api/nodes/heartbeat"
EXIT_TOKEN_REFUSED = 2


class TokenRefused(Exception):
    """Inferia does not know the token (a mistyped one, or the replica was stopped): retrying cannot help."""


class HeartbeatFailed(Exception):
    """Inferia answered the heartbeat with an error status (it may be restarting): retried after a backoff."""


@dataclass(frozen=True)
class AgentConfig:
    """Where to push, which engine to read, with which token, how often, and how long each request may take."""

    server: str
    engine: str
    token: str
    interval_s: float = 5.0
    timeout_s: float = 3.0
    max_backoff_s: float = 60.0


def engine_report_build(health_status: int | None, metrics_text: str | None) -> dict[str, Any]:
    """The heartbeat's body: "ready" when the engine's `/health` answered 200 (with its load when its `/metrics`
    could be read), "starting" otherwise (a node still loading its model, or an engine that stopped answering: the
    control plane decides what that means from how long it lasts)."""
    if health_status != 200:
        return {"state": "starting"}
    report: dict[str, Any] = {"state": "ready"}
    if metrics_text is not None:
        try:
            load = engine_load_parse(metrics_text)
        except ValueError:
            return report
        report["metrics"] = {"running": load.running, "waiting": load.waiting, "kv_cache": load.kv_cache}
    return report


async def engine_report(session: aiohttp.ClientSession, engine: str) -> dict[str, Any]:
    """Ask the local engine; never raises for the engine's sake (a dead engine is a report, not an agent error)."""
    base = engine.rstrip("/").removesuffix("/v1")
    try:
        async with session.get(base + "/health") as response:
            await response.read()
            health_status: int | None = response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        health_status = None
    metrics_text = None
    if health_status == 200:
        try:
            async with session.get(base + "/metrics") as response:
                if response.status == 200:
                    metrics_text = await response.text()
        except (aiohttp.ClientError, OSError, TimeoutError, UnicodeDecodeError):
            metrics_text = None
    return engine_report_build(health_status, metrics_text)


async def heartbeat_push(session: aiohttp.ClientSession, config: AgentConfig, report: dict[str, Any]) -> str:
    """Post one heartbeat; the replica's state as Inferia now records it."""
    headers = {"Authorization": f"Bearer {config.token}"}
    async with session.post(config.server.rstrip("/") + HEARTBEAT_PATH, json=report, headers=headers) as response:
        body = await response.read()
        if response.status in (401, 403):
            raise TokenRefused(f"the node token was refused ({response.status})")
        if response.status != 200:
            raise HeartbeatFailed(f"{response.status} {body[:200].decode(errors='replace')}")
        try:
            answer = await response.json(content_type=None)
        except ValueError:
            return "?"
        return str(answer.get("state", "?")) if isinstance(answer, dict) else "?"


def backoff_seconds(config: AgentConfig, failures: int, *, jitter: Callable[[], float] = random.random) -> float:
    """How long to wait after `failures` failed pushes in a row: the interval doubled each time, capped, with up to
    half of it taken off at random."""
    ceiling = min(config.max_backoff_s, config.interval_s * 2.0 ** min(failures, 16))
    return ceiling * (1 - jitter() / 2)


def _say(message: str) -> None:
    print(f"inferia agent: {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def agent_run(config: AgentConfig, *, stop: asyncio.Event | None = None) -> int:
    """Push heartbeats until `stop` is set (0) or the token is refused (EXIT_TOKEN_REFUSED)."""
    stop = stop or asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    failures = 0
    last_state = ""
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while not stop.is_set():
            try:
                report = await engine_report(session, config.engine)
                state = await heartbeat_push(session, config, report)
            except TokenRefused as error:
                _say(f"{error}: stopping (a retired replica's token, or a wrong one)")
                return EXIT_TOKEN_REFUSED
            except (HeartbeatFailed, aiohttp.ClientError, OSError, TimeoutError) as error:
                failures += 1
                wait = backoff_seconds(config, failures)
                _say(f"heartbeat failed ({type(error).__name__}: {error}); next try in {wait:.1f}s")
            else:
                if failures or state != last_state:
                    _say(f"pushed: engine {report['state']}, replica {state}")
                failures, last_state = 0, state
                wait = config.interval_s
            with contextlib.suppress(TimeoutError):  # the wait ran out: time for the next heartbeat
                await asyncio.wait_for(stop.wait(), timeout=wait)
    return 0


def agent_config_from(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> AgentConfig:
    """The configuration from the arguments, falling back to the environment; ValueError when it is unusable."""
    token = environ.get(TOKEN_ENV, "").strip()
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"{TOKEN_ENV} must hold the replica's node token ({TOKEN_PREFIX}...)")
    server = args.server or environ.get(SERVER_ENV, "")
    if not server.startswith(("http://", "https://")):
        raise ValueError(f"--server (or {SERVER_ENV}) must be Inferia's http(s):// URL")
    engine = args.engine or environ.get(ENGINE_ENV, "http://127.0.0.1:8000")
    interval = args.interval if args.interval is not None else float(environ.get(INTERVAL_ENV, "5"))
    if not 0.1 <= interval <= 300 or not 0.1 <= args.timeout <= 60 or args.max_backoff < interval:
        raise ValueError("--interval must be 0.1-300 s, --timeout 0.1-60 s, --max-backoff at least --interval")
    return AgentConfig(
        server=server, engine=engine, token=token, interval_s=interval, timeout_s=args.timeout,
        max_backoff_s=args.max_backoff,
    )  # fmt: skip


def command_agent(args: argparse.Namespace) -> int:
    """`inferia agent`: run until SIGTERM or Ctrl-C."""
    try:
        config = agent_config_from(args, os.environ)
    except ValueError as error:
        print(f"inferia agent: {error}", file=sys.stderr)
        return 1

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        _say(f"pushing heartbeats of {config.engine} to {config.server} every {config.interval_s:g}s")
        return await agent_run(config, stop=stop)

    return asyncio.run(main())
