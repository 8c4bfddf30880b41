"""The `inferia` command: `init`, `start [all|web|worker|beat|sim]`, `demo`, `drain`, `embedded` and `agent`.

Django is imported only by the commands that need it, so `inferia start web` hands over to the server at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from inferia_cli.agent_options import agent_arguments_add
from inferia_cli.processes import ROLES
from inferia_cli.verbs import verb_run, verbs_add


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; also what the docker-compose test checks every service's command against."""
    parser = argparse.ArgumentParser(prog="inferia", description="Inferia, a self-hosted control plane for LLMs.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="migrate, built-in roles, default organisation, superadmin (idempotent)")
    init.add_argument("-v", "--verbosity", type=int, default=1, choices=[0, 1, 2, 3])

    start = commands.add_parser("start", help="run the platform's processes (default: all of them)")
    start.add_argument("role", nargs="?", default="all", choices=["all", *ROLES])
    _add_port_arguments(start)

    demo = commands.add_parser("demo", help="init, create demo data and keys, print how to use them, serve")
    _add_port_arguments(demo)

    embedded = commands.add_parser("embedded", help="the embedded PostgreSQL and Redis under the data directory")
    embedded.add_argument("action", choices=["status", "stop"])

    drain = commands.add_parser(
        "drain", help="make /readyz fail (the web keeps serving), then wait for load balancers to notice (preStop)"
    )
    drain.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait before returning (default 10: endpoint updates)"
    )

    agent = commands.add_parser(
        "agent", help="on a GPU node: push the local engine's heartbeat and load to Inferia (INFERIA_NODE_TOKEN)"
    )
    agent_arguments_add(agent)
    verbs_add(commands)
    return parser


def _add_port_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="web server port (default: INFERIA_PORT or 8000)")
    parser.add_argument("--sim-port", type=int, help="simulated node port (default: INFERIA_SIM_PORT or 8100)")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `inferia` console script."""
    from dotenv import load_dotenv

    load_dotenv(os.path.join(os.getcwd(), ".env"), override=False)  # as settings.py does, before reading env
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")  # for us and every child
    args = build_parser().parse_args(argv)
    # SIGTERM before the supervisor takes over behaves like Ctrl-C, so that `finally` blocks (stopping the
    # embedded servers this process started) run instead of the process vanishing.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = _run(args)
    except KeyboardInterrupt:  # Ctrl-C before the supervisor took over signals (during migrations, say)
        code = 130
    sys.exit(code)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "handler", None):  # the verbs of inferia_cli/verbs.py
        return verb_run(args)
    from inferia_cli import commands  # imports no Django: each command imports what it needs

    if args.command == "init":
        return commands.command_init(verbosity=args.verbosity)
    if args.command == "start":
        return commands.command_start(role=args.role, port=args.port, sim_port=args.sim_port)
    if args.command == "drain":
        return commands.command_drain(wait_s=args.wait)
    if args.command == "demo":
        return commands.command_demo(port=args.port, sim_port=args.sim_port)
    return commands.command_embedded(action=args.action)
