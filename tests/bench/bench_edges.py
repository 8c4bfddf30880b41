"""What each other protocol costs over chat completions in web CPU per streamed request, measured at once.

Two web processes of this checkout front one inferia-sim (at --itl-ms per token, 5 by default: each token a chunk of
its own). In each round one serves chat completions and the other a protocol (Anthropic's Messages, OpenAI's
Responses, Ollama's chat), each under its own load generator at the same concurrency, both loads at the same time;
the next round swaps them. The protocol's cost is the median of the rounds' differences in web CPU per request.

Why at once: on a shared machine the CPU a request takes drifts from minute to minute, by more than the difference
measured. Runs in turns (`run.py --endpoint chat,messages,...`) spread by ±0.3 ms per 64-token stream at 5 ms per
token, and two processes serving the same chat completions code in turns differed by 0.25 ms; measured at once, the
rounds' differences spread by less than 0.1 ms. Swapping the processes cancels what one of them may pay more.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_edges.py [--itl-ms 5] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.run import (  # noqa: E402
    EDGE_COST_MS,
    MODEL,
    bench_tenant,
    bench_usage_dropped,
    endpoints_parsed,
    load,
    load_command,
    load_summary,
    tree_cpu_seconds,
)
from tests.kit.processes import TestProcess, sim_start, web_start  # noqa: E402


def edge_cost(rounds: list[dict[str, float]], endpoint: str) -> dict:
    """`endpoint`'s web CPU per request less chat completions' in each round (each round's figures by endpoint), and
    their median, mean and spread."""
    added = [round(figures[endpoint] - figures["chat"], 3) for figures in rounds]
    return {
        "added_web_cpu_ms": round(statistics.median(added), 3),
        "added_web_cpu_ms_mean": round(statistics.mean(added), 3),
        "added_web_cpu_ms_stdev": round(statistics.stdev(added), 3) if len(added) > 1 else 0.0,
        "added_web_cpu_ms_rounds": added,
        "chat_web_cpu_ms_per_request": round(statistics.median(figures["chat"] for figures in rounds), 3),
        "web_cpu_ms_per_request": round(statistics.median(figures[endpoint] for figures in rounds), 3),
    }


def rounds_endpoints(edge: str, rounds: int) -> list[tuple[str, str]]:
    """What the two web processes serve in each round: chat completions and `edge`, swapped every round."""
    return [("chat", edge) if number % 2 == 0 else (edge, "chat") for number in range(rounds)]


def round_measured(webs: list[TestProcess], endpoints: tuple[str, str], *, api_key: str, **load_args: int) -> dict:
    """One round: each web process under its endpoint's load, both at once; web CPU per request and errors."""
    before = [tree_cpu_seconds(web.pid) for web in webs]
    loads = [
        subprocess.Popen(
            load_command(web.url, api_key=api_key, endpoint=endpoint, **load_args), stdout=subprocess.PIPE, text=True
        )
        for web, endpoint in zip(webs, endpoints, strict=True)
    ]
    results = [load_summary(process.communicate()[0]) for process in loads]
    used = [tree_cpu_seconds(web.pid) - cpu for web, cpu in zip(webs, before, strict=True)]
    served = load_args["requests"] + load_args["concurrency"]  # as run.py counts them
    return {
        "cpu": {endpoint: round(cpu * 1000 / served, 3) for endpoint, cpu in zip(endpoints, used, strict=True)},
        "errors": sum(result["errors"] for result in results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The other protocols' web CPU over chat completions', at once.")
    parser.add_argument("--endpoint", type=endpoints_parsed, default="messages,responses,ollama")
    parser.add_argument("--itl-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=500, help="per process and round")
    parser.add_argument("--rounds", type=int, default=10, help="per protocol (even: each process serves each half)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    edges = [endpoint for endpoint in args.endpoint if endpoint != "chat"]

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    sim = sim_start("--itl-ms", f"{args.itl_ms:g}", models=(MODEL,))
    webs: list[TestProcess] = []
    results: dict[str, dict] = {}
    load_args = {"concurrency": args.concurrency, "requests": args.requests, "max_tokens": args.max_tokens}
    try:
        api_key = bench_tenant(sim.url)
        webs = [web_start(os.environ["DATABASE_URL"]) for _ in range(2)]
        for web in webs:  # unmeasured: caches and pools filled through every endpoint
            for endpoint in ["chat", *edges]:
                load(
                    web.url, concurrency=8, requests=200, max_tokens=args.max_tokens, api_key=api_key, endpoint=endpoint
                )
        for edge in edges:
            rounds, errors = [], 0
            for endpoints in rounds_endpoints(edge, args.rounds):
                measured = round_measured(webs, endpoints, api_key=api_key, **load_args)
                rounds.append(measured["cpu"])
                errors += measured["errors"]
            results[edge] = {**edge_cost(rounds, edge), "errors": errors}
            result = results[edge]
            print(
                f"{edge:<9} web CPU {result['web_cpu_ms_per_request']:.3f} ms/req, "
                f"{result['added_web_cpu_ms']:+.3f} over chat's {result['chat_web_cpu_ms_per_request']:.3f} "
                f"(mean {result['added_web_cpu_ms_mean']:+.3f}, spread {result['added_web_cpu_ms_stdev']:.3f}; "
                f"each round: " + " / ".join(f"{added:+.3f}" for added in result["added_web_cpu_ms_rounds"])
                + f")  errors {errors}",
                flush=True,
            )  # fmt: skip
    finally:
        for web in webs:
            web.stop()
        sim.stop()
        bench_usage_dropped()

    checks = {}
    for edge, result in results.items():
        checks[f"edge_cost_{edge}_c{args.concurrency}"] = result["added_web_cpu_ms"] <= EDGE_COST_MS
        checks[f"no_errors_{edge}_c{args.concurrency}"] = result["errors"] == 0
    print("targets: " + ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in checks.items()))
    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"edges-at-once-itl{args.itl_ms:g}ms-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"args": vars(args), "edges": results, "checks": checks}, indent=2))
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
