"""`/v1/chat/socket` under load: many concurrent chat streams carried over a few WebSocket connections.

Starts one inferia-sim (`--itl-ms` between tokens) and one web process (uvicorn), creates a bench organisation, key
and deployment (as `make bench` does, see run.py), then opens `--connections` sockets with the key on the upgrade and
keeps `--streams` requests in flight across them (an equal share per connection) until `--requests` have finished.
Prints and writes under bench-results/: requests/s, time to first chunk p50/p99, errors (error frames, requests that
never finished, connections that failed), and the web process's CPU (ms per request and share of one core over the
run) and peak RSS.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_chat_socket.py \\
        [--connections 16] [--streams 256] [--requests 5000] [--max-tokens 64] [--itl-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from websockets.asyncio.client import connect  # noqa: E402

from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.bench.loadgen import percentile  # noqa: E402
from tests.bench.run import MODEL, bench_tenant, peak_rss_mb  # noqa: E402
from tests.kit.processes import sim_start, web_start  # noqa: E402


class Tally:
    """What the connections saw, together."""

    def __init__(self, total: int) -> None:
        self.remaining = total  # requests still to start
        self.finished = 0
        self.errors: dict[str, int] = {}
        self.first_chunk_ms: list[float] = []

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def connection_run(url: str, secret: str, *, in_flight: int, max_tokens: int, tally: Tally, index: int) -> None:
    """One socket: keeps `in_flight` requests going until the shared budget of requests is spent."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Benchmark me."}], "max_tokens": max_tokens}
    started: dict[str, float] = {}
    sequence = 0
    try:
        async with connect(
            url, additional_headers={"Authorization": f"Bearer {secret}"}, max_size=None, compression=None
        ) as socket:
            if json.loads(await socket.recv()) != {"type": "ready"}:
                tally.error("not_ready")
                return

            async def ask() -> None:
                nonlocal sequence
                if tally.remaining <= 0:
                    return
                tally.remaining -= 1
                sequence += 1
                request_id = f"c{index}-{sequence}"
                started[request_id] = time.perf_counter()
                await socket.send(json.dumps({"type": "request", "id": request_id, "body": body}))

            for _ in range(in_flight):
                await ask()
            seen_first: set[str] = set()
            while started:
                frame = json.loads(await socket.recv())
                request_id = frame.get("id")
                kind = frame.get("type")
                if kind == "chunk" and request_id not in seen_first:
                    seen_first.add(request_id)
                    tally.first_chunk_ms.append((time.perf_counter() - started[request_id]) * 1000)
                elif kind in ("done", "error", "cancelled"):
                    if kind != "done":
                        tally.error(f"{kind}_{frame.get('status', '')}")
                    started.pop(request_id, None)
                    seen_first.discard(request_id)
                    tally.finished += 1
                    await ask()
    except Exception as failure:  # counted and reported, not raised: the other connections go on
        tally.error(f"connection_{type(failure).__name__}")
        tally.errors["unfinished"] = tally.errors.get("unfinished", 0) + len(started)


async def load(url: str, secret: str, *, connections: int, streams: int, requests: int, max_tokens: int) -> Tally:
    tally = Tally(requests)
    share, extra = divmod(streams, connections)
    await asyncio.gather(
        *(
            connection_run(
                url, secret, in_flight=share + (index < extra), max_tokens=max_tokens, tally=tally, index=index
            )
            for index in range(connections)
        )
    )
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chat streams over /v1/chat/socket against inferia-sim.")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--streams", type=int, default=256, help="requests in flight at once, over all connections")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--itl-ms", type=float, default=10.0, help="the engine's time between tokens")
    args = parser.parse_args(argv)
    if args.streams < args.connections:
        parser.error("--streams must be at least --connections")

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    sim = sim_start("--itl-ms", str(args.itl_ms), models=(MODEL,))
    web = None
    try:
        secret = bench_tenant(sim.url)
        # In-flight bound per connection above the share each connection carries here.
        per_connection = -(-args.streams // args.connections)
        web = web_start(
            os.environ["DATABASE_URL"], extra_env={"INFERIA_SOCKET_MAX_IN_FLIGHT": str(max(32, per_connection))}
        )
        url = web.url.replace("http://", "ws://", 1) + "/v1/chat/socket"
        cpu_before, wall_before = cpu_seconds(web.pid), time.perf_counter()
        tally = asyncio.run(
            load(
                url,
                secret,
                connections=args.connections,
                streams=args.streams,
                requests=args.requests,
                max_tokens=args.max_tokens,
            )
        )
        wall = time.perf_counter() - wall_before
        cpu = cpu_seconds(web.pid) - cpu_before
        result = {
            "connections": args.connections,
            "streams": args.streams,
            "requests": tally.finished,
            "max_tokens": args.max_tokens,
            "itl_ms": args.itl_ms,
            "seconds": round(wall, 2),
            "requests_per_s": round(tally.finished / wall, 1),
            "first_chunk_p50_ms": round(percentile(tally.first_chunk_ms, 50), 2),
            "first_chunk_p99_ms": round(percentile(tally.first_chunk_ms, 99), 2),
            "errors": sum(tally.errors.values()),
            "errors_by_kind": tally.errors,
            "web_cpu_ms_per_request": round(cpu * 1000 / max(1, tally.finished), 3),
            "web_cpu_share_of_a_core": round(cpu / wall, 3),
            "web_peak_rss_mb": round(peak_rss_mb(web.pid), 1),
        }
    finally:
        if web is not None:
            web.stop()
        sim.stop()
    print(
        f"{result['streams']} streams over {result['connections']} sockets: {result['requests']} requests in "
        f"{result['seconds']} s ({result['requests_per_s']} req/s), first chunk p50 {result['first_chunk_p50_ms']} ms "
        f"p99 {result['first_chunk_p99_ms']} ms, errors {result['errors']} {result['errors_by_kind'] or ''}, web CPU "
        f"{result['web_cpu_ms_per_request']} ms/req ({result['web_cpu_share_of_a_core']:.0%} of a core), web RSS "
        f"{result['web_peak_rss_mb']:.0f} MB",
        flush=True,
    )
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / f"chat-socket-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
