"""`make bench`: what waiting for a replica costs a request's usage append (`apps.gateway.metering.UsageAppender`).

A redis-server of the benchmark's own (and, for the replicated case, a replica of it) on free ports in 6500-6549;
the same event appended `--appends` times, one after another, as the gateway does at the end of each request:
- single: one Redis, no WAIT (the default without Sentinel): the pipelined connection,
- replicated: XADD then `WAIT 1 <INFERIA_REDIS_WAIT_MS>` with a replica in sync (the default with Sentinel),
- no replica: WAIT asked for but no replica there (what requests pay while the replica is down): an append whose
  WAIT came back short waits out INFERIA_REDIS_WAIT_MS (rounded up by Redis to its `hz` timer, 100 ms by default),
  and the appends of the next second skip the WAIT, so the median stays the single one's and p99 shows the wait.
Figures: microseconds per append, median and p99. Target: the replicated append within 1 ms of the single one at
the median (one more round trip on the same connection, and the replica's acknowledgement).

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_usage_wait.py [--appends 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.kit.ports import _bindable  # noqa: E402

PORTS = range(6500, 6550)
TARGET_EXTRA_US = 1000.0


def _redis_start(port: int, directory: str, *flags: str) -> subprocess.Popen[bytes]:
    import redis

    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*args, "--dir", directory, *flags], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=1)
    for _ in range(100):
        try:
            if client.ping():
                return server
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on port {port} did not start")


def _in_sync(port: int) -> bool:
    import redis

    info = redis.Redis(port=port, socket_timeout=1).info("replication")
    return bool(info.get("master_link_status") == "up")


def appends_us(port: int, appends: int, *, replicas: int, wait_ms: int) -> list[float]:
    """Microseconds of each of `appends` usage appends, through the gateway's own appender and settings."""
    from django.test import override_settings

    from apps.gateway.metering import UsageAppender
    from apps.usage.events import UsageEvent
    from inferia_runtime.redis_clients import GatewayRedis
    from inferia_runtime.redis_pipe import RedisPipe

    event = UsageEvent(
        request_id="bench", started_at=time.time(), endpoint="chat.completions", model="m", prompt_tokens=12,
        completion_tokens=64, cost_micros=1_000, latency_ms=120.0, streamed=True,
    )  # fmt: skip

    async def run() -> list[float]:
        client = GatewayRedis(port=port)
        pipe = RedisPipe(client)
        appender = UsageAppender(client, pipe)
        timings = []
        for _ in range(appends):
            started = time.perf_counter()
            await appender.append(event)
            timings.append((time.perf_counter() - started) * 1e6)
        pipe.close()
        await client.delete("bench-usage")
        await client.aclose()
        return timings

    with override_settings(
        INFERIA_USAGE_STREAM="bench-usage", INFERIA_REDIS_WAIT_REPLICAS=replicas, INFERIA_REDIS_WAIT_MS=wait_ms
    ):
        return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=2000)
    options = parser.parse_args(argv)
    import django

    django.setup()
    # Each append without a replica logs a warning: expected here.
    logging.getLogger("apps.gateway.metering").setLevel(logging.ERROR)
    from django.conf import settings

    free = [port for port in PORTS if _bindable(port)][:3]
    if len(free) < 3:
        print(f"bench_usage_wait: fewer than 3 free ports in {PORTS}")
        return 1
    master_port, replica_port, alone_port = free
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as directory:
        servers = [_redis_start(master_port, directory)]
        try:
            servers.append(_redis_start(replica_port, directory, "--replicaof", "127.0.0.1", str(master_port)))
            servers.append(_redis_start(alone_port, directory))
            for _ in range(100):
                if _in_sync(replica_port):
                    break
                time.sleep(0.1)
            results["single"] = appends_us(alone_port, options.appends, replicas=0, wait_ms=1)
            results["replicated"] = appends_us(
                master_port, options.appends, replicas=1, wait_ms=settings.INFERIA_REDIS_WAIT_MS
            )
            results["no replica"] = appends_us(
                alone_port, max(options.appends // 50, 20), replicas=1, wait_ms=settings.INFERIA_REDIS_WAIT_MS
            )
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=10)
    for name, timings in results.items():
        p99 = statistics.quantiles(timings, n=100)[98]
        print(f"usage append {name}: median {statistics.median(timings):.0f} µs, p99 {p99:.0f} µs", flush=True)
    print(f"(INFERIA_REDIS_WAIT_MS={settings.INFERIA_REDIS_WAIT_MS})")
    extra = statistics.median(results["replicated"]) - statistics.median(results["single"])
    passed = extra <= TARGET_EXTRA_US
    verdict = "ok" if passed else "MISSED"
    print(f"WAIT adds {extra:.0f} µs per request at the median; target <= {TARGET_EXTRA_US:.0f} µs: {verdict}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
