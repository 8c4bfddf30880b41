"""Benchmark of inferia-sim alone: requests/s, TTFT and the simulator's CPU cost per request.

Starts `python -m inferia_sim` with zero delays on a free port, then runs the load generator in its own process
at several concurrency levels. The simulator's CPU time comes from /proc/<pid>/stat (utime + stime) read before
and after each level, so it excludes the load generator.

    .venv/bin/python tests/bench/bench_sim.py [--requests 5000] [--levels 1,64,256] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


def wait_healthy(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"inferia-sim at {url} did not become healthy")


def run_level(url: str, *, concurrency: int, requests: int, max_tokens: int) -> dict:
    output = subprocess.run(
        [sys.executable, str(LOADGEN), "--url", url, "--concurrency", str(concurrency), "--requests", str(requests),
         "--max-tokens", str(max_tokens), "--json"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,64,256", help="comma list of concurrency levels")
    parser.add_argument("--requests", type=int, default=0, help="requests per level (default: 2000 at c=1, else 5000)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print all results as one JSON list")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen(
        [sys.executable, "-m", "inferia_sim", "--port", str(port), "--ttft-ms", "0", "--itl-ms", "0",
         "--max-num-seqs", str(max(levels) * 2), "--log-level", "WARNING"],
        cwd=REPO_ROOT,
    )  # fmt: skip
    results = []
    try:
        wait_healthy(url)
        for concurrency in levels:
            requests = args.requests or (2000 if concurrency == 1 else 5000)
            before = cpu_seconds(sim.pid)
            summary = run_level(url, concurrency=concurrency, requests=requests, max_tokens=args.max_tokens)
            # The warm-up requests (one per worker) also ran on the simulator's CPU clock.
            summary["sim_cpu_ms_per_request"] = round(
                (cpu_seconds(sim.pid) - before) * 1000 / (summary["requests"] + concurrency), 4
            )
            results.append(summary)
            if not args.json:
                print(
                    f"c={concurrency:<4} requests={summary['requests']:<6} errors={summary['errors']:<3} "
                    f"req/s={summary['requests_per_s']:<9} tok/s={summary['tokens_per_s']:<10} "
                    f"ttft p50={summary['ttft_p50_ms']:.2f}ms p99={summary['ttft_p99_ms']:.2f}ms "
                    f"latency p99={summary['latency_p99_ms']:.2f}ms "
                    f"sim cpu/request={summary['sim_cpu_ms_per_request']:.3f}ms",
                    flush=True,
                )
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
