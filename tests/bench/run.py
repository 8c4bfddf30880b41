"""`make bench`: the gateway against the simulated engine it fronts, under the same load, in the same run.

Starts one inferia-sim (zero delays, or --itl-ms between tokens) and one web process (the ASGI server named by
INFERIA_SERVER or --server, uvicorn by default), creates a bench organisation, key and deployment, then for each
concurrency level runs the lean load generator (its own process) first against the engine directly, then through
the gateway. Per level it prints requests/s, TTFT p50/p99, the gateway's added TTFT, the web process's and the
engine's CPU time per request (from /proc/<pid>/stat over the level) and the web process's peak RSS, and writes
everything as JSON under bench-results/. Each level runs --runs times; the figures are medians. With `--endpoint
messages`, `responses` or `ollama` the gateway is sent the same streams through Anthropic's `/v1/messages`, OpenAI's
`/v1/responses` or Ollama's `/ollama/api/chat`, to compare its web CPU per request with chat completions' on the
same engine. With `--pin` (and the cores for it) the engine gets a core of its own and the web process the others, as
on separate machines; by default all share every core.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/run.py [--levels 1,64,256] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.kit.processes import TestProcess, sim_start, web_start  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
MODEL = "bench-model"
TARGETS = {"added_ttft_p50_ms_c1": 2.0, "rate_ratio_c64": 0.70, "web_cpu_ms_per_request": 2.0, "web_rss_mb": 250.0}
# With an engine that takes time per token (--itl-ms), each token its own chunk: what the gateway must keep at c=64
# (and of the direct rate at c=256), with the default policy pipeline.
TIMED_TARGETS = {
    "rate_ratio_c64": 0.97,
    "rate_ratio_c256": 0.90,
    "web_cpu_ms_per_request_c64": 1.0,
    "added_ttft_p50_ms_c64": 2.0,
    "added_ttft_p99_ms_c64": 20.0,
}
# The endpoints the gateway can be sent the same streams through (`loadgen.py --endpoint`), and what each of the
# other protocols may cost over chat completions, in web CPU per streamed request, measured in the same runs.
ENDPOINTS = ("chat", "messages", "responses", "ollama")
EDGE_COST_MS = 0.2
# What a web process's core may be kept busy at before it is counted full (headroom for spikes and the event loop).
CORE_BUSY_MAX = 0.7
# Streams a second one GPU node's engine may serve, for the sizing table: read your own from its
# `vllm:request_success_total` rate; these span a small model on one GPU to a large one on a slow node.
NODE_STREAMS_PER_S = (5, 20, 50)


def capacity(levels: list[dict], *, max_tokens: int, itl_ms: float) -> dict:
    """What one web process sustains, from the levels measured: streams a second and web CPU per stream at the
    highest level, CPU per chunk (each token is its own chunk when the engine takes time per token), memory per
    concurrent stream (peak RSS growth between the lowest and the highest level), and GPU nodes per web process."""
    low, high = levels[0], levels[-1]
    cpu_ms = high["web_cpu_ms_per_request"]
    streams_per_core = 1000 / cpu_ms if cpu_ms else 0.0
    grown = high["concurrency"] - low["concurrency"]
    per_stream_kb = (high["web_peak_rss_mb"] - low["web_peak_rss_mb"]) * 1024 / grown if grown else 0.0
    return {
        "streams_per_s": high["gateway_rps"],
        "web_cpu_ms_per_stream": cpu_ms,
        "web_cpu_us_per_chunk": round(cpu_ms * 1000 / max_tokens, 1) if itl_ms else None,
        "streams_per_s_per_core": round(streams_per_core, 1),
        "rss_kb_per_concurrent_stream": round(max(per_stream_kb, 0.0), 1),
        # GPU nodes one web process (one core) fronts, by the streams a second each node serves.
        "nodes_per_web_process": {
            rate: round(streams_per_core * CORE_BUSY_MAX / rate, 1) for rate in NODE_STREAMS_PER_S
        },
    }


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a web server's worker processes)."""
    return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(each) for each in process_tree(pid))


def cores_placed(sim_pid: int, web_pid: int, workers: int) -> dict | None:
    """The engine on a core of its own and the web process(es) on the others, as on separate machines (in production
    the engine runs on its GPU node): sharing every core, each hop of a request through the gateway also waits for
    a core the other processes hold, which is this machine's, not the gateway's. None when there are too few cores
    for the web workers and the engine to have their own."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers + 1:
        return None
    engine, web = {cores[-1]}, set(cores[:-1])
    os.sched_setaffinity(sim_pid, engine)
    for each in process_tree(web_pid):
        os.sched_setaffinity(each, web)
    return {"engine": sorted(engine), "web": sorted(web)}


def peak_rss_mb(pid: int) -> float:
    """Peak RSS of the process, summed over its workers when it has some."""
    total = 0.0
    for each in process_tree(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def load_command(
    url: str, *, concurrency: int, requests: int, max_tokens: int, api_key: str | None, endpoint: str = "chat"
) -> list[str]:
    """The load generator's command line for one run (its summary is the last line it prints: `load_summary`)."""
    args = [sys.executable, str(LOADGEN), "--url", url, "--concurrency", str(concurrency), "--requests",
            str(requests), "--max-tokens", str(max_tokens), "--model", MODEL, "--endpoint", endpoint,
            "--json"]  # fmt: skip
    return [*args, "--api-key", api_key] if api_key else args


def load_summary(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def load(
    url: str, *, concurrency: int, requests: int, max_tokens: int, api_key: str | None, endpoint: str = "chat"
) -> dict:
    command = load_command(
        url, concurrency=concurrency, requests=requests, max_tokens=max_tokens, api_key=api_key, endpoint=endpoint
    )
    return load_summary(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def measured(process: TestProcess, url: str, **kwargs: object) -> dict:
    """One load run with the process's CPU time over it."""
    before = tree_cpu_seconds(process.pid)
    result = load(url, **kwargs)  # type: ignore[arg-type]
    used = tree_cpu_seconds(process.pid) - before
    result["cpu_ms_per_request"] = round(used * 1000 / max(1, result["requests"] + kwargs["concurrency"]), 3)  # type: ignore[operator]
    return result


def bench_tenant(sim_url: str, *, limits: bool = False, stream_interval_ms: int = 0) -> str:
    """A bench organisation, inference key and deployment on the engine; returns the key. With `limits`, the
    organisation gets a policy whose rate limits and budget never bind but are all counted (one Redis round trip to
    admit each request and one to settle it)."""
    import django

    django.setup()
    from apps.keys.services import api_key_create
    from tests.factories import ComputePoolFactory, OrganizationFactory, deployment_serving

    slug = f"bench-{uuid.uuid4().hex[:8]}"
    organization = OrganizationFactory(name=slug, slug=slug)
    pool = ComputePoolFactory(organization=organization, provider__name="bench", name="bench")
    deployment_serving(
        organization, MODEL, [sim_url], pool=pool, model_id="sim/bench", stream_interval_ms=stream_interval_ms
    )
    if limits:
        from apps.policies.services import policy_create

        policy_create(
            actor=None, organization=organization, requests_per_minute=10_000_000, tokens_per_minute=1_000_000_000,
            budget_per_day_micros=10**15,
        )  # fmt: skip
    return api_key_create(organization=organization, name="bench", scopes=["inference"]).secret


def bench_usage_dropped() -> None:
    """Delete the usage stream the bench's requests filled: its events are not worth storing."""
    from django.conf import settings

    from inferia_runtime.redis_clients import sync_redis

    sync_redis().delete(settings.INFERIA_USAGE_STREAM)


def median(runs: list[dict], field: str) -> float:
    return round(statistics.median(run[field] for run in runs), 3)


def added_each_run(direct_runs: list[dict], gateway_runs: list[dict], field: str) -> list[float]:
    """What the gateway added to `field` in each run, over the engine measured directly just before it: the spread
    of these is how far one run on this machine can be trusted."""
    return [round(run[field] - direct[field], 3) for direct, run in zip(direct_runs, gateway_runs, strict=True)]


def endpoints_parsed(text: str) -> list[str]:
    endpoints = text.split(",")
    unknown = [endpoint for endpoint in endpoints if endpoint not in ENDPOINTS]
    if unknown or len(set(endpoints)) != len(endpoints):
        raise argparse.ArgumentTypeError(f"endpoints are distinct ones of {', '.join(ENDPOINTS)}: {text!r}")
    return endpoints


def edge_measured(runs: list[dict], lead_runs: list[dict]) -> dict:
    """An endpoint's figures beside the lead endpoint's: its web CPU per request less the lead's in the same run,
    whose median drifts far less than either's own (this machine's speed moves from minute to minute)."""
    added = added_each_run(lead_runs, runs, "cpu_ms_per_request")
    return {
        "gateway_rps": median(runs, "requests_per_s"),
        "web_cpu_ms_per_request": median(runs, "cpu_ms_per_request"),
        "added_web_cpu_ms": round(statistics.median(added), 3),
        "added_web_cpu_ms_runs": added,
        "gateway_errors": sum(run["errors"] for run in runs),
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Gateway benchmark against inferia-sim.")
    parser.add_argument("--levels", default="1,64,256")
    parser.add_argument("--requests", type=int, default=0, help="per level and run (default 1000 at c=1, else 3000)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--itl-ms",
        type=float,
        default=0.0,
        help="the engine's inter-token latency (default 0: the stress case; a real engine's 5-50 ms sends each token "
        "as its own chunk, which is what the gateway forwards in production)",
    )
    parser.add_argument("--server", default=os.environ.get("INFERIA_SERVER", "uvicorn"), choices=["uvicorn", "daphne"])
    parser.add_argument(
        "--limits", action="store_true", help="also count rate limits and a budget (the default policy counts nothing)"
    )
    parser.add_argument(
        "--endpoint",
        default="chat",
        type=endpoints_parsed,
        help="what the gateway is sent: chat completions, or the same streams through Anthropic's /v1/messages, "
        "OpenAI's /v1/responses or Ollama's /ollama/api/chat (the engine is always sent chat completions directly). "
        "Several, comma-separated, take turns in each run on the same server (the first leads each level's "
        "figures); each other's web CPU is then also given as its difference from the first's in the same run, the "
        f"median of which must stay within {EDGE_COST_MS} ms, with no error",
    )
    parser.add_argument(
        "--stream-interval-ms",
        type=int,
        default=0,
        help="the bench deployment's stream interval (chunks coalesced for at most this long; default 0: off)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="give the engine a core of its own and the web process the others, as on separate machines (by default "
        "they and the load generator share every core). Each hop of a request through the gateway then waits less "
        "for a core, and the web process, woken for fewer chunks at a time, spends more CPU on each",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes behind the one port (default 1: one core)"
    )
    args = parser.parse_args(argv)
    endpoints: list[str] = args.endpoint

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    sim = sim_start("--itl-ms", str(args.itl_ms), models=(MODEL,))
    web = None
    placement = None
    try:
        api_key = bench_tenant(sim.url, limits=args.limits, stream_interval_ms=args.stream_interval_ms)
        web = web_start(os.environ["DATABASE_URL"], server=args.server, workers=args.workers)
        placement = cores_placed(sim.pid, web.pid, args.workers) if args.pin else None
        print(
            f"cores: engine {placement['engine']}, web {placement['web']}, load generator any"
            if placement
            else "cores: shared by the engine, the web process and the load generator",
            flush=True,
        )
        # Unmeasured: the first requests through each endpoint fill caches and pools, and would weigh on whichever
        # endpoint the first measured run starts with.
        for endpoint in endpoints:
            load(web.url, concurrency=8, requests=200, max_tokens=args.max_tokens, api_key=api_key, endpoint=endpoint)
        levels = []
        for concurrency in (int(level) for level in args.levels.split(",")):
            requests = args.requests or (1000 if concurrency == 1 else 3000)
            common = {"concurrency": concurrency, "requests": requests, "max_tokens": args.max_tokens}
            direct_runs = []
            runs_of: dict[str, list[dict]] = {endpoint: [] for endpoint in endpoints}
            for run in range(args.runs):
                direct_runs.append(measured(sim, sim.url, api_key=None, **common))
                # Each run starts with the next endpoint, so that none always runs first (or right after the engine).
                for endpoint in endpoints[run % len(endpoints) :] + endpoints[: run % len(endpoints)]:
                    sim_before = cpu_seconds(sim.pid)
                    runs_of[endpoint].append(measured(web, web.url, api_key=api_key, endpoint=endpoint, **common))
                    runs_of[endpoint][-1]["sim_cpu_ms_per_request"] = round(
                        (cpu_seconds(sim.pid) - sim_before) * 1000 / (requests + concurrency), 3
                    )
            gateway_runs = runs_of[endpoints[0]]
            level = {
                "concurrency": concurrency,
                "requests": requests,
                "direct_rps": median(direct_runs, "requests_per_s"),
                "gateway_rps": median(gateway_runs, "requests_per_s"),
                "direct_ttft_p50_ms": median(direct_runs, "ttft_p50_ms"),
                "gateway_ttft_p50_ms": median(gateway_runs, "ttft_p50_ms"),
                "direct_ttft_p99_ms": median(direct_runs, "ttft_p99_ms"),
                "gateway_ttft_p99_ms": median(gateway_runs, "ttft_p99_ms"),
                "web_cpu_ms_per_request": median(gateway_runs, "cpu_ms_per_request"),
                "sim_cpu_ms_per_request": median(direct_runs, "cpu_ms_per_request"),
                "gateway_errors": sum(run["errors"] for run in gateway_runs),
                "direct_errors": sum(run["errors"] for run in direct_runs),
                "web_peak_rss_mb": round(peak_rss_mb(web.pid), 1),
                "runs": {"direct": direct_runs, "gateway": gateway_runs},
            }
            level["added_ttft_p50_ms"] = round(level["gateway_ttft_p50_ms"] - level["direct_ttft_p50_ms"], 3)
            level["added_ttft_p99_ms"] = round(level["gateway_ttft_p99_ms"] - level["direct_ttft_p99_ms"], 3)
            level["added_ttft_p50_ms_runs"] = added_each_run(direct_runs, gateway_runs, "ttft_p50_ms")
            level["rate_ratio"] = round(level["gateway_rps"] / level["direct_rps"], 3) if level["direct_rps"] else 0
            level["endpoints"] = {
                endpoint: edge_measured(runs_of[endpoint], gateway_runs) for endpoint in endpoints[1:]
            }
            levels.append(level)
            print(
                f"c={concurrency:<4} gateway {level['gateway_rps']:>7.1f} req/s (direct {level['direct_rps']:>7.1f}, "
                f"ratio {level['rate_ratio']:.2f})  TTFT p50 {level['gateway_ttft_p50_ms']:.2f} ms "
                f"p99 {level['gateway_ttft_p99_ms']:.2f} ms  added p50 {level['added_ttft_p50_ms']:+.2f} ms "
                + (
                    "(each run " + " / ".join(f"{added:+.2f}" for added in level["added_ttft_p50_ms_runs"]) + ") "
                    if len(direct_runs) > 1
                    else ""
                )
                + f"p99 {level['added_ttft_p99_ms']:+.2f} ms  "
                f"web CPU {level['web_cpu_ms_per_request']:.3f} ms/req  sim CPU {level['sim_cpu_ms_per_request']:.3f} "
                f"ms/req  errors {level['gateway_errors']}  web RSS {level['web_peak_rss_mb']:.0f} MB",
                flush=True,
            )
            for endpoint, edge in level["endpoints"].items():
                print(
                    f"       {endpoint:<9} {edge['gateway_rps']:>7.1f} req/s  "
                    f"web CPU {edge['web_cpu_ms_per_request']:.3f} ms/req, "
                    f"{edge['added_web_cpu_ms']:+.3f} over {endpoints[0]} (each run: "
                    + " / ".join(f"{added:+.3f}" for added in edge["added_web_cpu_ms_runs"])
                    + f")  errors {edge['gateway_errors']}",
                    flush=True,
                )
    finally:
        if web is not None:
            web.stop()
        sim.stop()
        bench_usage_dropped()

    by_level = {level["concurrency"]: level for level in levels}
    checks = {}
    if 1 in by_level:
        checks["added_ttft_p50_ms_c1"] = by_level[1]["added_ttft_p50_ms"] < TARGETS["added_ttft_p50_ms_c1"]
    if 64 in by_level and not args.itl_ms:
        checks["rate_ratio_c64"] = by_level[64]["rate_ratio"] >= TARGETS["rate_ratio_c64"]
    if args.itl_ms and 64 in by_level:
        c64 = by_level[64]
        checks["rate_ratio_c64"] = c64["rate_ratio"] >= TIMED_TARGETS["rate_ratio_c64"]
        checks["web_cpu_ms_per_request_c64"] = (
            c64["web_cpu_ms_per_request"] <= TIMED_TARGETS["web_cpu_ms_per_request_c64"]
        )
        checks["added_ttft_p50_ms_c64"] = c64["added_ttft_p50_ms"] < TIMED_TARGETS["added_ttft_p50_ms_c64"]
        checks["added_ttft_p99_ms_c64"] = c64["added_ttft_p99_ms"] < TIMED_TARGETS["added_ttft_p99_ms_c64"]
    if args.itl_ms and 256 in by_level:
        checks["rate_ratio_c256"] = by_level[256]["rate_ratio"] >= TIMED_TARGETS["rate_ratio_c256"]
    if 256 in by_level:
        checks["no_errors_c256"] = by_level[256]["gateway_errors"] == 0
    if not args.itl_ms:  # with time per token each token is a chunk of its own: judged per chunk, not per request
        checks["web_cpu_ms_per_request"] = all(
            level["web_cpu_ms_per_request"] < TARGETS["web_cpu_ms_per_request"] for level in levels
        )
    for level in levels:
        for endpoint, edge in level["endpoints"].items():
            checks[f"edge_cost_{endpoint}_c{level['concurrency']}"] = edge["added_web_cpu_ms"] <= EDGE_COST_MS
            checks[f"no_errors_{endpoint}_c{level['concurrency']}"] = edge["gateway_errors"] == 0
    # Per web process: with --workers the peak is summed over them.
    checks["web_rss_mb"] = max(level["web_peak_rss_mb"] for level in levels) / args.workers < TARGETS["web_rss_mb"]
    print("targets: " + ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in checks.items()))
    sizing = capacity(levels, max_tokens=args.max_tokens, itl_ms=args.itl_ms)
    per_chunk = f", {sizing['web_cpu_us_per_chunk']} µs per chunk" if sizing["web_cpu_us_per_chunk"] else ""
    print(
        f"capacity: one web process {sizing['streams_per_s']:.0f} streams/s at c={levels[-1]['concurrency']}, "
        f"{sizing['web_cpu_ms_per_stream']:.2f} ms of web CPU per {args.max_tokens}-token stream{per_chunk} "
        f"({sizing['streams_per_s_per_core']:.0f} streams/s per core), "
        f"{sizing['rss_kb_per_concurrent_stream']:.0f} KB of RSS per concurrent stream"
    )
    print(
        f"capacity: GPU nodes one web process fronts (its core under {CORE_BUSY_MAX:.0%} busy): "
        + ", ".join(
            f"{nodes:g} at {rate} streams/s per node" for rate, nodes in sizing["nodes_per_web_process"].items()
        )
    )

    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    variant = (
        ("" if endpoints == ["chat"] else "-" + "-".join(endpoints))
        + ("-limits" if args.limits else "")
        + (f"-itl{args.itl_ms:g}ms" if args.itl_ms else "")
    )
    path = out_dir / f"gateway-{args.server}{variant}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = {"server": args.server, "endpoints": endpoints, "limits": args.limits, "max_tokens": args.max_tokens,
              "itl_ms": args.itl_ms, "stream_interval_ms": args.stream_interval_ms, "cores": placement,
              "levels": levels,
              "targets": TARGETS, "checks": checks, "capacity": sizing}  # fmt: skip
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
