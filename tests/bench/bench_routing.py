"""`make bench`: what routing costs as a deployment grows, 1,000 replicas behind one model against 2.

Two measurements. First `Router.choose` on its own, per call, with and without a session (in this process, on the
warm path). Then whole requests: one inferia-sim (zero delays) and one web process, two deployments of one
organisation, one with 2 replicas and one with 1,000 (every replica is the same engine, so only the routing
differs), and the lean load generator against each in turn; the web process's CPU time per request comes from
/proc/<pid>/stat, and includes what the gateway does in the background for each replica (the once-a-second load
refresh from Redis). Each run alternates the two models; the figures are medians and, for the target, the least
disturbed run of each (other processes on a shared machine move the medians by 20%). Target: 1,000 replicas within
10% of 2, both for `choose` (without a session; a session adds a jump consistent hash, O(log n)) and for the web CPU
per request.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_routing.py [--requests 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.kit.processes import sim_start, web_start  # noqa: E402

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"
SIZES = (2, 1000)
TARGET_RATIO = 1.10


def choose_cost_us(size: int, *, session: bool) -> float:
    """Microseconds per `Router.choose` call over `size` replicas, some of them busy (best of five repeats)."""
    import aiohttp

    from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
    from apps.gateway.router import Router

    replicas = tuple(
        ReplicaTarget(id=index, deployment_id=1, urls={}, waiting=index % 3, kv_cache=(index % 10) / 10)
        for index in range(1, size + 1)
    )
    route = DeploymentRoute(
        id=1, organization_id=1, served_model_name="m", created=0, price_input_per_mtok_micros=0,
        price_output_per_mtok_micros=0, timeout=aiohttp.ClientTimeout(), first_byte_timeout_s=5, replicas=replicas,
    )  # fmt: skip
    router = Router()
    for target in replicas[::3]:
        router.started(target)
    sessions = [f"conversation-{n}" for n in range(1000)]
    calls = 20_000

    def run() -> None:
        choose = router.choose
        if session:
            for n in range(calls):
                choose(route, session=sessions[n % 1000])
        else:
            for _ in range(calls):
                choose(route)

    return min(timeit.repeat(run, number=1, repeat=5)) * 1e6 / calls


def bench_tenant(sim_url: str) -> str:
    """A bench organisation with one deployment per size, every replica on the one engine; returns its key."""
    import django

    django.setup()
    from apps.compute.models import Replica
    from apps.keys.services import api_key_create
    from tests.factories import ComputePoolFactory, OrganizationFactory, deployment_serving

    slug = f"bench-routing-{uuid.uuid4().hex[:8]}"
    organization = OrganizationFactory(name=slug, slug=slug)
    pool = ComputePoolFactory(organization=organization, provider__name="bench", name="bench")
    for size in SIZES:
        deployment, _ = deployment_serving(organization, f"route-{size}", [sim_url], pool=pool, model_id="sim/bench")
        # The rest in one insert: a thousand factory saves would take longer than the measurement.
        Replica.objects.bulk_create(
            Replica(deployment=deployment, pool=pool, endpoint=sim_url, state=Replica.State.READY)
            for index in range(1, size)
        )
    return api_key_create(organization=organization, name="bench", scopes=["inference"]).secret


def load(url: str, *, model: str, concurrency: int, requests: int, api_key: str) -> dict:
    args = [sys.executable, str(LOADGEN), "--url", url, "--concurrency", str(concurrency), "--requests",
            str(requests), "--max-tokens", "16", "--model", model, "--api-key", api_key, "--json"]  # fmt: skip
    output = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per model and run")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--server", default=os.environ.get("INFERIA_SERVER", "uvicorn"), choices=["uvicorn", "daphne"])
    args = parser.parse_args(argv)

    import django

    django.setup()
    choose = {
        f"{size}{'_session' if session else ''}": round(choose_cost_us(size, session=session), 3)
        for size in SIZES
        for session in (False, True)
    }
    print("Router.choose µs/call: " + ", ".join(f"{name} {cost:.2f}" for name, cost in choose.items()), flush=True)

    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    sim = sim_start("--max-num-seqs", "1024", models=tuple(f"route-{size}" for size in SIZES))
    web = None
    runs: dict[int, list[dict]] = {size: [] for size in SIZES}
    try:
        api_key = bench_tenant(sim.url)
        web = web_start(os.environ["DATABASE_URL"], server=args.server)
        for size in SIZES:  # warm-up: the catalog load and the connection pool
            load(web.url, model=f"route-{size}", concurrency=args.concurrency, requests=200, api_key=api_key)
        for _ in range(args.runs):
            for size in SIZES:
                before = cpu_seconds(web.pid)
                result = load(web.url, model=f"route-{size}", concurrency=args.concurrency, requests=args.requests,
                              api_key=api_key)  # fmt: skip
                used = cpu_seconds(web.pid) - before
                result["web_cpu_ms_per_request"] = used * 1000 / (result["requests"] + args.concurrency)
                runs[size].append(result)
    finally:
        if web is not None:
            web.stop()
        sim.stop()
        from tests.bench.run import bench_usage_dropped

        bench_usage_dropped()

    figures = {
        size: {
            "web_cpu_ms_per_request": round(statistics.median(run["web_cpu_ms_per_request"] for run in runs[size]), 3),
            # The least disturbed run: on a shared machine the median still carries other processes' interference.
            "web_cpu_ms_per_request_min": round(min(run["web_cpu_ms_per_request"] for run in runs[size]), 3),
            "requests_per_s": round(statistics.median(run["requests_per_s"] for run in runs[size]), 1),
            "ttft_p50_ms": round(statistics.median(run["ttft_p50_ms"] for run in runs[size]), 3),
            "errors": sum(run["errors"] for run in runs[size]),
        }
        for size in SIZES
    }
    small, large = SIZES
    ratio = figures[large]["web_cpu_ms_per_request_min"] / figures[small]["web_cpu_ms_per_request_min"]
    choose_ratio = choose[str(large)] / choose[str(small)]
    for size in SIZES:
        fig = figures[size]
        print(
            f"{size:>5} replicas: web CPU {fig['web_cpu_ms_per_request']:.3f} ms/req (least "
            f"{fig['web_cpu_ms_per_request_min']:.3f})  "
            f"{fig['requests_per_s']:.0f} req/s  TTFT p50 {fig['ttft_p50_ms']:.2f} ms  errors {fig['errors']}",
            flush=True,
        )
    checks = {
        "web_cpu_ratio": ratio <= TARGET_RATIO,
        "choose_ratio": choose_ratio <= TARGET_RATIO,
        "no_errors": all(fig["errors"] == 0 for fig in figures.values()),
    }
    print(f"web CPU {large}/{small} (least disturbed runs) = {ratio:.3f}, choose {large}/{small} = {choose_ratio:.3f}")
    print("targets: " + ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in checks.items()))

    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"routing-scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    result = {"choose_us": choose, "gateway": figures, "web_cpu_ratio": ratio, "choose_ratio": choose_ratio,
              "runs": runs, "checks": checks}  # fmt: skip
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
