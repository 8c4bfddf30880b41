"""`make bench`: one health-check cycle over 1,000 replicas, on one worker, against its period.

Starts 1,000 simulated engines, each on its own loopback address (tests/bench/health_engines.py: 127.0.x.y, one
port), creates a deployment with one READY replica per engine in a database of its own (the checker checks every
live replica, so other data would be measured too), then runs `replicas_health_check()` --cycles times in this
process, as the worker's `health_check` task does, and prints each cycle's wall time and CPU time. --silent adds
replicas on addresses nothing answers on (their misses, then their moves to UNHEALTHY, are measured too). The target: a
cycle ends within INFERIA_HEALTH_INTERVAL_SECONDS (2 s by default), so checks never queue behind each other.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_health.py [--replicas 1000] [--cycles 5]
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
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from inferia_runtime.database_url import database_url_with_name  # noqa: E402
from tests.bench.health_engines import engine_address  # noqa: E402
from tests.kit.ports import port_reserve  # noqa: E402
from tests.kit.processes import TestProcess  # noqa: E402


def bench_database(url: str) -> tuple[str, str]:
    """A fresh database next to the one in `url`: (its URL, its name)."""
    import psycopg

    name = f"{urlsplit(url).path.lstrip('/') or 'inferia'}_health_bench"
    admin = database_url_with_name(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return database_url_with_name(url, name), name


def bench_drop(url: str, name: str) -> None:
    import psycopg

    admin = database_url_with_name(url, "postgres")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_replicas(*, count: int, port: int, silent: int = 0) -> int:
    """A READY deployment with `count` READY replicas, one per engine address, as the simulator adapter records
    replicas it runs on another host (judged by their engine's /health and /metrics alone), plus `silent` more on
    addresses nothing listens on (refused at once, as a node whose engine died). Returns its id."""
    from apps.compute.models import Replica
    from tests.factories import ComputePoolFactory, ModelDeploymentFactory, OrganizationFactory

    slug = f"bench-health-{uuid.uuid4().hex[:8]}"
    organization = OrganizationFactory(name=slug, slug=slug)
    pool = ComputePoolFactory(organization=organization, provider__name=slug, name=slug)
    deployment = ModelDeploymentFactory(organization=organization, pool=pool, name="bench-model", state="ready")
    Replica.objects.bulk_create(
        Replica(
            deployment=deployment,
            pool=pool,
            state=Replica.State.READY,
            endpoint=f"http://{engine_address(index)}:{port}",
            provider_handle={"key": f"{slug}-{index}", "host": "bench-gpu-node"},
        )
        for index in range(count + silent)
    )
    return deployment.pk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--silent", type=int, default=0, help="replicas more, on addresses nothing answers on")
    args = parser.parse_args(argv)
    total = args.replicas + args.silent
    period = float(os.environ.get("INFERIA_HEALTH_INTERVAL_SECONDS", "2.0"))

    source_url = os.environ["DATABASE_URL"]
    url, name = bench_database(source_url)
    os.environ["DATABASE_URL"] = url
    port = port_reserve()
    engines = TestProcess(
        [sys.executable, str(Path(__file__).with_name("health_engines.py")), "--port", str(port),
         "--count", str(args.replicas)],
        port=port, name="health-engines",
    )  # fmt: skip
    cycles = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
        engines.wait_line("listening", timeout=60)
        import django

        django.setup()
        from apps.compute.health import replicas_health_check
        from apps.compute.models import Replica

        deployment_id = bench_replicas(count=args.replicas, port=port, silent=args.silent)
        for _ in range(args.cycles):
            started, cpu_started = time.perf_counter(), time.process_time()
            counts = replicas_health_check()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            cycles.append({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "outcomes": dict(counts)})
            print(
                f"cycle over {total} replicas: {wall:.3f} s wall, {cpu:.3f} s CPU, {dict(counts)}",
                flush=True,
            )
        answering = Replica.objects.filter(deployment_id=deployment_id, last_metrics__running=3.0)
        ready, with_load = answering.filter(state=Replica.State.READY).count(), answering.count()
    finally:
        engines.stop()
        from django.db import connections

        connections.close_all()
        bench_drop(source_url, name)

    walls = [cycle["wall_s"] for cycle in cycles]
    checks = {
        "cycle_within_period": max(walls) < period,
        "answering_ready": ready == args.replicas,
        "load_recorded": with_load == args.replicas,
    }
    print(
        f"health cycle, {args.replicas} answering + {args.silent} silent replicas on distinct addresses: "
        f"median {statistics.median(walls):.3f} s, "
        f"max {max(walls):.3f} s (period {period:g} s)"
    )
    print("targets: " + ", ".join(f"{check} {'ok' if passed else 'MISSED'}" for check, passed in checks.items()))
    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"health-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {"replicas": args.replicas, "silent": args.silent, "period_s": period, "cycles": cycles, "checks": checks}
        )
    )
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
