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
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: make `tests.kit` importable

from tests.kit.processes import sim_start  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15 of stat


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

    sim = sim_start(
        "--ttft-ms", "0", "--itl-ms", "0", "--max-num-seqs", str(max(levels) * 2), models=("inferia/sim-model",)
    )  # fmt: skip
    url = sim.url
    results = []
    try:
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
        sim.stop()
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
