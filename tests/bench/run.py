"""`make bench`: the gateway against the simulated engine it fronts, under the same load, in the same run.

Starts one inferia-sim (zero delays, or --itl-ms between tokens) and one web process (the ASGI server named by
INFERIA_SERVER or --server, uvicorn by default), creates a bench organisation, key and deployment, then for each
concurrency level runs the lean load generator (its own process) first against the engine directly, then through
the gateway. Per level it prints requests/s, TTFT p50/p99, the gateway's added TTFT, the web process's and the
engine's CPU time per request (from /proc/<pid>/stat over the level) and the web process's peak RSS, and writes
everything as JSON under bench-results/. Each level runs --runs times; the figures are medians.

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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.kit.processes import TestProcess, sim_start, web_start  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
MODEL = "bench-model"
TARGETS = {"added_ttft_p50_ms_c1": 2.0, "rate_ratio_c64": 0.70, "web_cpu_ms_per_request": 2.0, "web_rss_mb": 250.0}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def load(url: str, *, concurrency: int, requests: int, max_tokens: int, api_key: str | None) -> dict:
    args = [sys.executable, str(LOADGEN), "--url", url, "--concurrency", str(concurrency), "--requests",
            str(requests), "--max-tokens", str(max_tokens), "--model", MODEL, "--json"]  # fmt: skip
    if api_key:
        args += ["--api-key", api_key]
    output = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def measured(process: TestProcess, url: str, **kwargs: object) -> dict:
    """One load run with the process's CPU time over it."""
    before = cpu_seconds(process.pid)
    result = load(url, **kwargs)  # type: ignore[arg-type]
    used = cpu_seconds(process.pid) - before
    result["cpu_ms_per_request"] = round(used * 1000 / max(1, result["requests"] + kwargs["concurrency"]), 3)  # type: ignore[operator]
    return result


def bench_tenant(sim_url: str, *, limits: bool = False) -> str:
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
    deployment_serving(organization, MODEL, [sim_url], pool=pool, model_id="sim/bench")
    if limits:
        from apps.policies.services import policy_create

        policy_create(
            actor=None, organization=organization, requests_per_minute=10_000_000, tokens_per_minute=1_000_000_000,
            budget_per_day_micros=10**15,
        )  # fmt: skip
    return api_key_create(organization=organization, name="bench", scopes=["inference"]).secret


def median(runs: list[dict], field: str) -> float:
    return round(statistics.median(run[field] for run in runs), 3)


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
    args = parser.parse_args(argv)

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    sim = sim_start("--itl-ms", str(args.itl_ms), models=(MODEL,))
    web = None
    try:
        api_key = bench_tenant(sim.url, limits=args.limits)
        web = web_start(os.environ["DATABASE_URL"], server=args.server)
        levels = []
        for concurrency in (int(level) for level in args.levels.split(",")):
            requests = args.requests or (1000 if concurrency == 1 else 3000)
            common = {"concurrency": concurrency, "requests": requests, "max_tokens": args.max_tokens}
            direct_runs, gateway_runs = [], []
            for _ in range(args.runs):
                direct_runs.append(measured(sim, sim.url, api_key=None, **common))
                sim_before = cpu_seconds(sim.pid)
                gateway_runs.append(measured(web, web.url, api_key=api_key, **common))
                gateway_runs[-1]["sim_cpu_ms_per_request"] = round(
                    (cpu_seconds(sim.pid) - sim_before) * 1000 / (requests + concurrency), 3
                )
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
            level["rate_ratio"] = round(level["gateway_rps"] / level["direct_rps"], 3) if level["direct_rps"] else 0
            levels.append(level)
            print(
                f"c={concurrency:<4} gateway {level['gateway_rps']:>7.1f} req/s (direct {level['direct_rps']:>7.1f}, "
                f"ratio {level['rate_ratio']:.2f})  TTFT p50 {level['gateway_ttft_p50_ms']:.2f} ms "
                f"p99 {level['gateway_ttft_p99_ms']:.2f} ms  added p50 {level['added_ttft_p50_ms']:+.2f} ms  "
                f"web CPU {level['web_cpu_ms_per_request']:.3f} ms/req  sim CPU {level['sim_cpu_ms_per_request']:.3f} "
                f"ms/req  errors {level['gateway_errors']}  web RSS {level['web_peak_rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        if web is not None:
            web.stop()
        sim.stop()
        from django.conf import settings

        from inferia_runtime.redis_clients import sync_redis

        sync_redis().delete(settings.INFERIA_USAGE_STREAM)  # the bench's own usage events, not worth storing

    by_level = {level["concurrency"]: level for level in levels}
    checks = {}
    if 1 in by_level:
        checks["added_ttft_p50_ms_c1"] = by_level[1]["added_ttft_p50_ms"] < TARGETS["added_ttft_p50_ms_c1"]
    if 64 in by_level:
        checks["rate_ratio_c64"] = by_level[64]["rate_ratio"] >= TARGETS["rate_ratio_c64"]
    if 256 in by_level:
        checks["no_errors_c256"] = by_level[256]["gateway_errors"] == 0
    checks["web_cpu_ms_per_request"] = all(
        level["web_cpu_ms_per_request"] < TARGETS["web_cpu_ms_per_request"] for level in levels
    )
    checks["web_rss_mb"] = max(level["web_peak_rss_mb"] for level in levels) < TARGETS["web_rss_mb"]
    print("targets: " + ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in checks.items()))

    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    variant = ("-limits" if args.limits else "") + (f"-itl{args.itl_ms:g}ms" if args.itl_ms else "")
    path = out_dir / f"gateway-{args.server}{variant}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = {"server": args.server, "limits": args.limits, "max_tokens": args.max_tokens, "itl_ms": args.itl_ms,
              "levels": levels, "targets": TARGETS, "checks": checks}  # fmt: skip
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
