"""`make bench`: prefix-aware routing against load-only routing, on a multi-turn chat workload over 8 simulated
replicas with automatic prefix caching.

The engines are fixed first, and the same in both runs: prefill costs PREFILL_MS_PER_TOKEN per prompt token the
prefix cache does not hold, each engine caches PREFIX_CACHE_BLOCKS blocks of 16 tokens, and runs at most
MAX_NUM_SEQS sequences at once (more wait). The workload: CONVERSATIONS conversations, each with its own long system
prompt, taking turns (a question, then the answer appended to the history) with a random pause between turns, and
starting over as a new conversation after TURNS turns. Its working set (all live conversations' prompts) is several
times one engine's cache and fits in the eight caches together only when each conversation stays on one replica.

The same workload (same seed) runs twice through one web process each time, against its own fresh fleet:
`INFERIA_ROUTER_PREFIX_AWARE=false` (two random choices by load; the workload sends no session id, so no affinity)
and `=true`. Per run: TTFT p50
and p99 at the client, requests/s, the engines' prefix cache hit rate (their `vllm:prefix_cache_*` counters), each
replica's share of requests (max over mean), and the web process's CPU per request; before them, what the prefix
hashing and lookup cost per request on their own. Targets: prefix-aware TTFT p50
at least 30% lower than load-only, no replica above 1.5x the mean load.

With --shared-system-prompt every conversation's system prompt opens with the same ~1,000 tokens (one application's
instructions), the case where following the longest prefix alone would pile new conversations on one replica.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python tests/bench/bench_prefix.py [--seconds 40] [--shared-system-prompt]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inferia_site.settings")

from tests.bench.bench_sim import cpu_seconds  # noqa: E402
from tests.bench.loadgen import percentile  # noqa: E402
from tests.kit.ports import port_reserve  # noqa: E402
from tests.kit.processes import TestProcess, web_start  # noqa: E402

FLEET = Path(__file__).resolve().parent / "sim_fleet.py"
REPLICAS = 8
# The engines, fixed before any routing was tuned: 0.1 ms of prefill per uncached token (a 2,000-token prompt takes
# 200 ms cold), 10 ms between output tokens, 800 cached blocks (12,800 tokens) each, 8 sequences at once.
PREFILL_MS_PER_TOKEN = 0.1
ITL_MS = 10.0
PREFIX_CACHE_BLOCKS = 800
MAX_NUM_SEQS = 8
# The workload: 48 live conversations, 6 turns each, system prompts of ~1,000 tokens, questions of ~150 and answers
# of ~200 (the history the next turn sends back), 8 output tokens per turn, 0.5-1.5 s between turns.
CONVERSATIONS = 48
TURNS = 6
SYSTEM_CHARS = 4000
QUESTION_CHARS = 600
ANSWER_CHARS = 800
MAX_TOKENS = 8
PAUSE_S = (0.5, 1.5)
# With --shared-system-prompt every conversation's system prompt starts with the same text (set in main).
SHARED_SYSTEM_PROMPT = ""
TARGETS = {"ttft_p50_reduction": 0.30, "max_over_mean_load": 1.5}
WORDS = ("ship", "harbour", "tide", "knot", "sail", "anchor", "crew", "wind", "chart", "deck", "hull", "mast")


def text_of(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


def bench_tenant(urls: dict[str, list[str]]) -> str:
    import django

    django.setup()
    from apps.keys.services import api_key_create
    from tests.factories import ComputePoolFactory, OrganizationFactory, deployment_serving

    slug = f"bench-prefix-{uuid.uuid4().hex[:8]}"
    organization = OrganizationFactory(name=slug, slug=slug)
    pool = ComputePoolFactory(organization=organization, provider__name="bench", name="bench")
    for model, endpoints in urls.items():
        deployment_serving(organization, model, endpoints, pool=pool, model_id="sim/bench")
    return api_key_create(organization=organization, name="bench", scopes=["inference"]).secret


async def conversation_loop(
    session: object, url: str, model: str, api_key: str, index: int, deadline: float, ttfts: list[float]
) -> int:
    """One seat of the workload: conversation after conversation until the deadline; the requests it made."""
    import aiohttp

    assert isinstance(session, aiohttp.ClientSession)
    rng = random.Random(index)
    headers = {"Authorization": f"Bearer {api_key}"}
    sent = 0
    generation = 0
    await asyncio.sleep(rng.uniform(0, PAUSE_S[1] * 2))  # stagger the starts
    while time.monotonic() < deadline:
        generation += 1
        if SHARED_SYSTEM_PROMPT:
            # One application's instructions for everyone, then what is this conversation's own.
            system = SHARED_SYSTEM_PROMPT + f" Conversation {index}.{generation}. " + text_of(rng, QUESTION_CHARS)
        else:
            system = f"Conversation {index}.{generation}. " + text_of(rng, SYSTEM_CHARS)
        messages = [{"role": "system", "content": system}]
        for _turn in range(TURNS):
            if time.monotonic() >= deadline:
                break
            messages.append({"role": "user", "content": text_of(rng, QUESTION_CHARS)})
            body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "stream": True}
            started = time.monotonic()
            first: float | None = None
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"{response.status}: {await response.text()}")
                async for line in response.content:
                    if first is None and b'"content":"' in line and b'"content":""' not in line:
                        first = time.monotonic() - started
            if first is not None:
                ttfts.append(first)
            sent += 1
            messages.append({"role": "assistant", "content": text_of(rng, ANSWER_CHARS)})
            await asyncio.sleep(rng.uniform(*PAUSE_S))
    return sent


async def workload(url: str, model: str, api_key: str, seconds: float) -> tuple[list[float], int, float]:
    import aiohttp

    ttfts: list[float] = []
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=CONVERSATIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        sent = await asyncio.gather(
            *(conversation_loop(session, url, model, api_key, n, deadline, ttfts) for n in range(CONVERSATIONS))
        )
    return ttfts, sum(sent), time.monotonic() - started


def engine_counters(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    counters: dict[str, float] = {"requests": 0.0}
    for line in text.splitlines():
        if line.startswith("vllm:prefix_cache_queries_total"):
            counters["queries"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:prefix_cache_hits_total"):
            counters["hits"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:request_success_total"):
            counters["requests"] += float(line.rsplit(" ", 1)[1])
    return counters


def run_mode(*, prefix_aware: bool, model: str, urls: list[str], api_key: str, seconds: float) -> dict:
    env = {"INFERIA_ROUTER_PREFIX_AWARE": "true" if prefix_aware else "false"}
    web = web_start(os.environ["DATABASE_URL"], extra_env=env)
    try:
        before = cpu_seconds(web.pid)
        ttfts, sent, elapsed = asyncio.run(workload(web.url, model, api_key, seconds))
        web_cpu_ms = (cpu_seconds(web.pid) - before) * 1000 / max(1, sent)
    finally:
        web.stop()
    engines = [engine_counters(url) for url in urls]
    loads = [engine["requests"] for engine in engines]
    queries = sum(engine.get("queries", 0) for engine in engines)
    hits = sum(engine.get("hits", 0) for engine in engines)
    return {
        "prefix_aware": prefix_aware,
        "requests": sent,
        "requests_per_s": round(sent / elapsed, 1),
        "ttft_p50_ms": round(percentile(ttfts, 50) * 1000, 2),
        "ttft_p99_ms": round(percentile(ttfts, 99) * 1000, 2),
        "ttft_mean_ms": round(statistics.fmean(ttfts) * 1000, 2) if ttfts else 0.0,
        "prefix_cache_hit_rate": round(hits / queries, 3) if queries else 0.0,
        "replica_requests": loads,
        "max_over_mean_load": round(max(loads) / statistics.fmean(loads), 3) if sum(loads) else 0.0,
        "web_cpu_ms_per_request": round(web_cpu_ms, 3),
    }


def routing_cost_us() -> dict[str, float]:
    """Microseconds per request that prefix-aware routing adds in the web process, on the workload's longest prompt
    (the last turn): turning the request into text and hashes, then `Router.choose` with and without them."""
    import timeit

    import aiohttp
    import django

    django.setup()
    from apps.gateway.catalog import DeploymentRoute, ReplicaTarget
    from apps.gateway.prefix_index import prefix_hashes, prompt_text
    from apps.gateway.router import Router
    from apps.gateway.schemas import ChatCompletionRequest

    rng = random.Random(0)
    messages = [{"role": "system", "content": text_of(rng, SYSTEM_CHARS)}]
    for _turn in range(TURNS):
        messages += [{"role": "user", "content": text_of(rng, QUESTION_CHARS)},
                     {"role": "assistant", "content": text_of(rng, ANSWER_CHARS)}]  # fmt: skip
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": messages[:-1]})
    replicas = tuple(ReplicaTarget(id=index, deployment_id=1, urls={}) for index in range(1, REPLICAS + 1))
    route = DeploymentRoute(
        id=1, organization_id=1, served_model_name="m", created=0, price_input_per_mtok_micros=0,
        price_output_per_mtok_micros=0, timeout=aiohttp.ClientTimeout(), first_byte_timeout_s=5, replicas=replicas,
    )  # fmt: skip
    router = Router()
    prefix = prefix_hashes(prompt_text(request), seed=route.prefix_seed)
    calls = 5000

    def best(statement: object) -> float:
        return round(min(timeit.repeat(statement, number=calls, repeat=5)) * 1e6 / calls, 2)  # type: ignore[arg-type]

    return {
        "prompt_chars": len(prompt_text(request)),
        "hashing_us": best(lambda: prefix_hashes(prompt_text(request), seed=route.prefix_seed)),
        "choose_with_prefix_us": best(lambda: router.choose(route, prefix=prefix)),
        "choose_without_prefix_us": best(lambda: router.choose(route)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="workload duration per routing mode")
    parser.add_argument(
        "--shared-system-prompt",
        action="store_true",
        help="every conversation's system prompt starts with the same ~1,000 tokens (one application's instructions)",
    )
    args = parser.parse_args(argv)
    if args.shared_system_prompt:
        global SHARED_SYSTEM_PROMPT
        SHARED_SYSTEM_PROMPT = text_of(random.Random("shared"), SYSTEM_CHARS)

    import subprocess

    cost = routing_cost_us()
    print(
        f"prefix-aware routing per request ({cost['prompt_chars']:.0f}-character prompt): hashing "
        f"{cost['hashing_us']:.1f} µs, choose {cost['choose_with_prefix_us']:.1f} µs "
        f"(without a prefix {cost['choose_without_prefix_us']:.1f} µs)",
        flush=True,
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO, check=True)
    ports = [port_reserve() for _ in range(2 * REPLICAS)]
    flags = [
        "--prefill-ms-per-token", str(PREFILL_MS_PER_TOKEN), "--itl-ms", str(ITL_MS),
        "--prefix-cache-blocks", str(PREFIX_CACHE_BLOCKS), "--max-num-seqs", str(MAX_NUM_SEQS),
        "--model", "prefix-load-only", "--model", "prefix-aware", "--log-level", "WARNING",
    ]  # fmt: skip
    fleet = TestProcess(
        [sys.executable, str(FLEET), "--ports", ",".join(map(str, ports)), *flags], name="sim-fleet", port=ports[0]
    )
    results = []
    try:
        line = fleet.wait_line("fleet ready:", timeout=60)
        all_urls = line.split("fleet ready:", 1)[1].split()
        urls = {"prefix-load-only": all_urls[:REPLICAS], "prefix-aware": all_urls[REPLICAS:]}
        api_key = bench_tenant(urls)
        for prefix_aware, model in ((False, "prefix-load-only"), (True, "prefix-aware")):
            result = run_mode(
                prefix_aware=prefix_aware, model=model, urls=urls[model], api_key=api_key, seconds=args.seconds
            )
            results.append(result)
            print(
                f"{'prefix-aware' if prefix_aware else 'load-only   '}  {result['requests_per_s']:.1f} req/s  "
                f"TTFT p50 {result['ttft_p50_ms']:.1f} ms  p99 {result['ttft_p99_ms']:.1f} ms  "
                f"cache hit rate {result['prefix_cache_hit_rate']:.2f}  "
                f"max/mean load {result['max_over_mean_load']:.2f}  "
                f"web CPU {result['web_cpu_ms_per_request']:.3f} ms/req",
                flush=True,
            )
    finally:
        fleet.kill_everything()
        from tests.bench.run import bench_usage_dropped

        bench_usage_dropped()

    load_only, aware = results
    reduction = 1 - aware["ttft_p50_ms"] / load_only["ttft_p50_ms"] if load_only["ttft_p50_ms"] else 0.0
    checks = {
        "ttft_p50_reduction": reduction >= TARGETS["ttft_p50_reduction"],
        "max_over_mean_load": aware["max_over_mean_load"] <= TARGETS["max_over_mean_load"],
    }
    print(
        f"TTFT p50 {reduction:.0%} lower with prefix-aware routing; added web CPU "
        f"{aware['web_cpu_ms_per_request'] - load_only['web_cpu_ms_per_request']:+.3f} ms/req"
    )
    print("targets: " + ", ".join(f"{name} {'ok' if passed else 'MISSED'}" for name, passed in checks.items()))
    out_dir = REPO / "bench-results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"routing-prefix-{time.strftime('%Y%m%d-%H%M%S')}.json"
    engine = {"prefill_ms_per_token": PREFILL_MS_PER_TOKEN, "itl_ms": ITL_MS,
              "prefix_cache_blocks": PREFIX_CACHE_BLOCKS, "max_num_seqs": MAX_NUM_SEQS}  # fmt: skip
    path.write_text(
        json.dumps(
            {
                "engine": engine,
                "runs": results,
                "ttft_p50_reduction": reduction,
                "routing_cost_us": cost,
                "checks": checks,
            }
        )
    )
    print(f"written {path.relative_to(REPO)}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
