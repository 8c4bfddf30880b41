"""Several simulated engines in one process, each on its own port with its own state (queue, prefix cache, counters),
as separate replicas would be: a benchmark of eight replicas then costs one process, not eight, on a small machine.

    python tests/bench/sim_fleet.py --ports 21001,21002 [inferia-sim flags ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: this checkout's inferia_sim

from inferia_sim.cli import config_from_args, new_event_loop
from inferia_sim.server import SimServer


async def fleet_serve(ports: list[int], flags: list[str]) -> None:
    config, _level = config_from_args(flags)
    servers = [SimServer(dataclasses.replace(config, port=port)) for port in ports]
    for server in servers:
        await server.start()
    print("fleet ready: " + " ".join(server.url for server in servers), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma list, one engine per port")
    args, flags = parser.parse_known_args()
    loop = new_event_loop()
    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how the fleet is stopped
            loop.run_until_complete(fleet_serve([int(port) for port in args.ports.split(",")], flags))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
