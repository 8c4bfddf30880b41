"""The `inferia agent` options, apart from the agent (inferia_cli/agent.py), so that building the parser imports nothing
beyond argparse."""

from __future__ import annotations

import argparse

from inferia_runtime.node_agent import ENGINE_ENV, INTERVAL_ENV, SERVER_ENV


def agent_arguments_add(agent: argparse.ArgumentParser) -> None:
    """The `inferia agent` options (the token is not one of them: it comes from INFERIA_NODE_TOKEN)."""
    agent.add_argument("--server", help=f"Inferia's URL, where heartbeats go (default: {SERVER_ENV})")
    agent.add_argument("--engine", help=f"the local engine's URL (default: {ENGINE_ENV} or http://127.0.0.1:8000)")
    agent.add_argument("--interval", type=float, help=f"seconds between heartbeats (default: {INTERVAL_ENV} or 5)")
    agent.add_argument("--timeout", type=float, default=3.0, help="seconds each request may take (3)")
    agent.add_argument("--max-backoff", type=float, default=60.0, help="longest wait after failures (60)")
    agent.set_defaults(handler="agent:command_agent")
